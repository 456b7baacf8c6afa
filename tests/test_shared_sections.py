"""The scripts share their skeleton byte for byte, so a diff shows only the algorithm."""

import ast

import pytest

from tests.conftest import REPO, SCRIPTS
from tools.shared_sections import sections

# The order of the algorithm (STYLE.md principle 1); the update sits between
# "advantages" and "logging and checkpoints" and is each file's own.
EXPECTED = ["configuration", "seeding and device", "distributed", "environments", "agent", "rollout", "advantages",
            "logging and checkpoints", "evaluation", "training loop and main"]


def read(script):
    return (REPO / f"{script}.py").read_text()


@pytest.mark.parametrize("script", SCRIPTS)
def test_sections_present_in_algorithm_order(script):
    assert list(sections(read(script))) == EXPECTED


@pytest.mark.parametrize("script", SCRIPTS)
def test_update_lies_between_advantages_and_logging(script):
    text = read(script)
    update = text.index("\ndef update(")
    assert text.index("# === shared: advantages ===") < update < text.index("# === shared: logging and checkpoints ===")


@pytest.mark.parametrize("script", SCRIPTS[1:])
def test_shared_sections_identical_to_ppo_clip(script):
    reference, theirs = sections(read(SCRIPTS[0])), sections(read(script))
    for name in EXPECTED:
        assert theirs[name] == reference[name], f"{script}.py: shared section '{name}' differs from ppo_clip.py"


@pytest.mark.parametrize("script", SCRIPTS)
def test_only_allowed_imports(script):
    """numpy, torch, gymnasium and the standard library; optional extras are imported inside functions."""
    tree = ast.parse(read(script))
    top_level = {alias.name.split(".")[0] for node in tree.body if isinstance(node, ast.Import)
                 for alias in node.names}
    top_level |= {node.module.split(".")[0] for node in tree.body if isinstance(node, ast.ImportFrom)}
    import sys
    third_party = {name for name in top_level if name not in sys.stdlib_module_names}
    assert third_party <= {"numpy", "torch", "gymnasium"}


def test_parser_rejects_malformed_sections():
    with pytest.raises(ValueError):
        sections("# === shared: a b ===\nx = 1\n")
    with pytest.raises(ValueError):
        sections("# === shared: ab ===\n# === shared: cd ===\n# === end shared ===\n")
    assert sections("# === shared: ab ===\nx = 1\n# === end shared ===\n") == {
        "ab": "# === shared: ab ===\nx = 1\n# === end shared ===\n"}
