"""--compile: torch.compile on each update's inner step, with eager's results up to rounding."""

import copy
import csv

import pytest
import torch

from tests.conftest import run_script, tiny


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def one_update(module, agent, args, batch):
    """update() from a fixed seed on a copy of `agent`: (the copy, its diagnostics)."""
    agent = copy.deepcopy(agent)
    optimizers, state = module.make_optimizers(agent, args), module.initial_algorithm_state(args)
    torch.manual_seed(0)  # the same minibatch order (PPO) or Fisher subsample (TRPO)
    return agent, module.update(agent, optimizers, state, batch, args, progress=0.25)


@pytest.mark.parametrize("env, action_dim, continuous", [("CartPole-v1", 2, False),
                                                          ("Pendulum-v1", 1, True)])
def test_a_compiled_update_matches_eager_within_float_tolerance(module, env, action_dim, continuous):
    torch.manual_seed(1)
    agent = module.Agent(obs_shape=(3,), action_dim=action_dim, continuous=continuous)
    obs = torch.randn(64, 3)
    with torch.no_grad():
        policy, values = agent.score(obs)
        actions = policy.sample()
        batch = module.Batch(obs, actions, policy.log_prob(actions), values,
                             advantages=torch.randn(64), returns=torch.randn(64))
    flags = ["--env", env, "--num-minibatches", "4"]
    eager_args = module.parse_args(flags)
    compiled_args = module.parse_args(flags + ["--compile"])
    eager, eager_stats = one_update(module, agent, eager_args, batch)
    compiled, compiled_stats = one_update(module, agent, compiled_args, batch)
    for (name, e), c in zip(eager.named_parameters(), compiled.parameters()):
        assert not torch.equal(e, dict(agent.named_parameters())[name]), f"{name} did not move"
        torch.testing.assert_close(c, e, rtol=1e-4, atol=1e-5, msg=name)
    assert compiled_stats.keys() == eager_stats.keys()
    for key, value in eager_stats.items():
        assert compiled_stats[key] == pytest.approx(value, rel=1e-3, abs=1e-5), key


def test_a_compiled_run_is_reproducible_logs_its_compile_time_and_resumes(script, tmp_path):
    for name in ("a", "b"):
        result = run_script(script, *tiny(script), "--compile", "--run-dir", name, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "| compile " in result.stdout
    assert (tmp_path / "a" / "episodes.csv").read_text() == (tmp_path / "b" / "episodes.csv").read_text()
    weights = [torch.load(tmp_path / name / "model.pt", weights_only=True)["agent"] for name in "ab"]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    eager = run_script(script, "--resume", "a", "--no-compile", "--total-timesteps", "256", cwd=tmp_path)
    assert eager.returncode == 2 and "--compile cannot change when resuming" in eager.stderr
    resumed = run_script(script, "--resume", "a", "--total-timesteps", "256", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    progress = rows(tmp_path / "a" / "progress.csv")
    assert [int(r["global_step"]) for r in progress] == [64, 128, 192, 256]
    compile_times = [float(r["compile_time"]) for r in progress]
    assert compile_times[0] > 0 and compile_times == sorted(compile_times)  # carried over the resume


def test_an_eager_run_has_no_compile_column(script, tmp_path):
    assert run_script(script, *tiny(script), "--run-dir", "run", cwd=tmp_path).returncode == 0
    assert "compile_time" not in rows(tmp_path / "run" / "progress.csv")[0]


def test_compile_without_a_cpp_compiler_is_one_line_and_exit_2(script, tmp_path):
    # A fresh cache: with one already holding the probe's code, nothing would need compiling.
    env = {"CXX": str(tmp_path / "no-such-compiler"), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "cache")}
    result = run_script(script, *tiny(script), "--compile", "--run-dir", "run", cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert f"{script}.py: error: --compile: torch.compile cannot build code here" in result.stderr
    assert "C++ compiler" in result.stderr
    assert not (tmp_path / "run").exists()
