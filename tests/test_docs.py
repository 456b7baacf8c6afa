"""The README stays true: every flag documented, CI runs the README's test command."""

import re

from tests.conftest import REPO

README = (REPO / "README.md").read_text()


def test_readme_documents_every_flag(script, module):
    for action in module.build_parser()._actions:
        if action.dest != "help":
            assert f"`{action.option_strings[0]}" in README, f"{script}: {action.option_strings[0]} not in README"


def test_ci_runs_the_readme_test_command():
    blocks = re.findall(r"```bash\n(.*?)```", README, re.S)
    test_command = next(line for block in blocks for line in block.splitlines() if "pytest" in line)
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert ci[-1] == test_command
    assert any("pip install" in line and "-r requirements-dev.txt" in line for line in ci)
