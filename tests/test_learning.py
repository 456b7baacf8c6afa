"""The scripts learn with their default settings (fixed seeds, budgets with headroom)."""

import csv

import numpy as np
import pytest

from benchmarks.solved import steps_to_threshold
from tests.conftest import run_script

CARTPOLE_BUDGET = 100_000  # the bar: solved "well inside" this many steps
SOLVED_RETURN, SOLVED_WINDOW = 475.0, 20  # CartPole-v1's threshold, as in Gymnasium's spec
PENDULUM_BUDGET = 100_000
PENDULUM_GAIN = 300.0  # random play scores about -1200 per episode; learning must add at least this

pytestmark = pytest.mark.learning  # minutes of training: the README's second test command


def test_solves_cartpole(script, tmp_path):
    result = run_script(script, "--env", "CartPole-v1", "--seed", "1", "--total-timesteps", CARTPOLE_BUDGET,
                        "--run-dir", "run", cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr
    step = steps_to_threshold(tmp_path / "run" / "episodes.csv", SOLVED_RETURN, SOLVED_WINDOW)
    assert step is not None and step <= CARTPOLE_BUDGET


def test_improves_on_pendulum(script, tmp_path):
    result = run_script(script, "--env", "Pendulum-v1", "--seed", "1", "--total-timesteps", PENDULUM_BUDGET,
                        "--run-dir", "run", cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "run" / "episodes.csv", newline="") as f:
        returns = [float(row["return"]) for row in csv.DictReader(f)]
    first, last = np.mean(returns[:10]), np.mean(returns[-10:])
    assert last > first + PENDULUM_GAIN, (first, last)
