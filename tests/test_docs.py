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


def test_ci_runs_the_readme_test_commands():
    blocks = re.findall(r"```bash\n(.*?)```", README, re.S)
    commands = [line.split("#")[0].strip() for block in blocks for line in block.splitlines() if "pytest" in line]
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert len(commands) == 2 and [line for line in ci if "pytest" in line] == commands
    assert '-m "not learning"' in commands[0] and "-m learning" in commands[1]
    assert any("pip install" in line and "-r requirements-dev.txt" in line for line in ci)
