"""Shared fixtures: every behaviour test runs over each script in SCRIPTS.

A script joins the shared tests by adding its module name here.
"""

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = ["ppo_clip", "ppo_penalty", "trpo"]

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def pytest_configure(config):
    config.addinivalue_line("markers", "learning: a check that the scripts learn (minutes of training); "
                                       "the README's second test command runs them")


def load(name):
    """Import a script as a module (importing has no side effects)."""
    return importlib.import_module(name)


@pytest.fixture(params=SCRIPTS)
def script(request):
    return request.param


@pytest.fixture
def module(script):
    return load(script)


def run_script(name, *args, cwd, timeout=300, env=None):
    """Run `python <name>.py args...` as a user would; returns CompletedProcess."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, str(REPO / f"{name}.py"), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, env=full_env)


# Flags for a run that takes a second or two: two updates of 64 steps each, two
# epochs of whatever each script iterates over (PPO: the batch; TRPO: the value fit).
TINY = ["--num-steps", "64", "--num-minibatches", "4", "--total-timesteps", "128"]
EPOCHS_FLAG = {"ppo_clip": "--update-epochs", "ppo_penalty": "--update-epochs", "trpo": "--vf-epochs"}


def tiny(name):
    return TINY + [EPOCHS_FLAG[name], "2"]
