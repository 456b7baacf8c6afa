"""The README stays short and true: --help is the reference for flags, CI runs the README's test command."""

import re

from tests.conftest import REPO

README = (REPO / "README.md").read_text()
MAX_README_LINES = 300  # the details live in BENCHMARKS.md and --help (issue 30)


def test_readme_is_short_and_points_to_help():
    # Flags are documented once, by --help (tests/test_cli.py checks it covers every flag
    # with its default); the README says so instead of repeating them.
    assert len(README.splitlines()) <= MAX_README_LINES
    assert "--help" in README


def test_ci_runs_the_readme_test_command():
    blocks = re.findall(r"```bash\n(.*?)```", README, re.S)
    test_command = next(line for block in blocks for line in block.splitlines() if "pytest" in line)
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert ci[-1] == test_command
    assert any("pip install" in line and "-r requirements-dev.txt" in line for line in ci)
