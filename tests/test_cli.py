"""The scripts run as a user runs them: command line, files, errors, resume, Ctrl-C."""

import csv
import json
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.conftest import REPO, SCRIPTS, run_script, tiny


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny CartPole run per script, shared by the tests that only read it."""
    runs = {}

    def get(script):
        if script not in runs:
            cwd = tmp_path_factory.mktemp(script)
            result = run_script(script, *tiny(script), "--run-dir", "run", cwd=cwd)
            assert result.returncode == 0, result.stderr
            runs[script] = (cwd / "run", result)
        return runs[script]

    return get


def test_help_documents_every_flag_with_its_default(script, module):
    result = run_script(script, "--help", cwd=REPO)
    assert result.returncode == 0
    # Split the help into one entry per flag: entries start on a line indented by two spaces and "--".
    entries = re.split(r"\n  (?=--)", result.stdout.split("options:", 1)[1])
    described = {entry.split()[0].rstrip(","): entry for entry in entries if entry.startswith("--")}
    for action in module.build_parser()._actions:
        if action.dest != "help":
            flag = action.option_strings[0]
            assert flag in described, f"{flag} missing from --help"
            assert "default" in described[flag], f"{flag} does not state its default"


def test_run_writes_the_documented_outputs(script, trained):
    run_dir, result = trained(script)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["algorithm"] == script and config["settings"]["env"] == "CartPole-v1"
    assert set(config["versions"]) == {"torch", "gymnasium", "numpy", "python"}  # no mujoco, no ale_py
    progress = rows(run_dir / "progress.csv")
    assert [int(r["global_step"]) for r in progress] == [64, 128]
    assert {"time", "sps", "return_mean", "length_mean", "explained_variance"} <= set(progress[0])
    episodes = rows(run_dir / "episodes.csv")
    assert episodes and list(episodes[0]) == ["global_step", "return", "length"]
    # Raw returns: CartPole pays 1 per step, so an episode's return equals its length.
    assert all(float(e["return"]) == int(e["length"]) for e in episodes)
    checkpoint = torch.load(run_dir / "model.pt", weights_only=True)
    assert checkpoint["global_step"] == 128 and checkpoint["algorithm"] == script
    assert "obs_rms.mean" in checkpoint["agent"] and checkpoint["optimizers"]
    # Each observation counted once: the warm-up took the first rollout's, the update the second's.
    assert checkpoint["agent"]["obs_rms.count"].item() == 128
    assert config["world_size"] == checkpoint["world_size"] == 1
    # One compact console line per update, between a first line saying what trains and where,
    # and a last one saying where the model is and how to evaluate it.
    lines = result.stdout.splitlines()
    assert len([line for line in lines if line.startswith(f"[{script}] step")]) == 2
    assert lines[0] == f"[{script}] training CartPole-v1 at step 0 of 128 in run"
    assert lines[-1] == f"[{script}] saved run/model.pt; evaluate it with: python {script}.py --eval run/model.pt"


def test_eval_uses_the_saved_agent(script, trained, module):
    run_dir, _ = trained(script)
    result = run_script(script, "--eval", run_dir / "model.pt", "--eval-episodes", "3", cwd=run_dir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("CartPole-v1: 3 episodes, return ")
    agent = module.load_agent(run_dir / "model.pt")
    checkpoint = torch.load(run_dir / "model.pt", weights_only=True)
    assert torch.equal(agent.obs_rms.mean, checkpoint["agent"]["obs_rms.mean"])
    assert agent.obs_rms.count > 0  # the normalizer statistics came with the model
    games = module.evaluate(agent, "CartPole-v1", episodes=3, seed=5)
    assert len(games) == 3 and games == module.evaluate(agent, "CartPole-v1", episodes=3, seed=5)
    assert all(game["return"] == game["length"] for game in games)  # CartPole scores 1 a step
    mean, cut = f"{sum(game['return'] for game in games) / 3:.2f}", sum(game["time_limit"] for game in games)
    assert cut == sum(game["length"] == 500 for game in games)  # CartPole-v1's time limit
    same_seed = run_script(script, "--eval", run_dir / "model.pt", "--eval-episodes", "3", "--seed", "5",
                           cwd=run_dir)
    assert f"return {mean} +- " in same_seed.stdout and f", {cut} ended by the time limit" in same_seed.stdout


def test_resume_continues_the_run(script, tmp_path):
    assert run_script(script, *tiny(script), "--run-dir", "run", cwd=tmp_path).returncode == 0
    run_dir = tmp_path / "run"
    episodes_before = rows(run_dir / "episodes.csv")
    changed = run_script(script, "--resume", "run", "--gamma", "0.5", "--total-timesteps", "256", cwd=tmp_path)
    assert changed.returncode != 0 and "cannot change when resuming" in changed.stderr
    result = run_script(script, "--resume", "run", "--total-timesteps", "256", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [int(r["global_step"]) for r in rows(run_dir / "progress.csv")] == [64, 128, 192, 256]
    episodes_after = rows(run_dir / "episodes.csv")
    assert episodes_after[:len(episodes_before)] == episodes_before  # appended, header written once
    assert torch.load(run_dir / "model.pt", weights_only=True)["global_step"] == 256
    assert json.loads((run_dir / "config.json").read_text())["settings"]["total_timesteps"] == 256
    done = run_script(script, "--resume", "run", cwd=tmp_path)  # already at its total
    assert done.returncode != 0 and "larger --total-timesteps" in done.stderr


def test_same_seed_same_results(script, tmp_path):
    flags = ["--num-steps", "256", "--num-minibatches", "4", "--total-timesteps", "768", "--num-envs", "2"]
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        assert run_script(script, *flags, "--seed", seed, "--run-dir", name, cwd=tmp_path).returncode == 0
    episodes = {name: (tmp_path / name / "episodes.csv").read_text() for name in "abc"}
    assert episodes["a"] == episodes["b"]
    assert episodes["a"] != episodes["c"]
    progress = [rows(tmp_path / name / "progress.csv") for name in "ab"]
    losses = [[r[k] for r in p for k in r if k not in ("time", "sps")] for p in progress]
    assert losses[0] == losses[1]
    weights = [torch.load(tmp_path / name / "model.pt", weights_only=True)["agent"] for name in "abc"]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not torch.equal(weights[0]["actor.0.weight"], weights[2]["actor.0.weight"])


def test_ctrl_c_saves_a_checkpoint_that_resumes(script, tmp_path):
    process = subprocess.Popen([sys.executable, str(REPO / f"{script}.py"), "--num-steps", "256",
                                "--num-minibatches", "4", "--total-timesteps", "1000000", "--run-dir", "run"],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    progress = tmp_path / "run" / "progress.csv"
    deadline = time.monotonic() + 120
    while not (progress.exists() and len(rows(progress)) >= 2) and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    last = int(rows(progress)[-1]["global_step"])
    checkpoint = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert checkpoint["global_step"] == last  # the checkpoint matches the last logged update
    assert "--resume run" in stdout
    result = run_script(script, "--resume", "run", "--total-timesteps", last + 256, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert int(rows(progress)[-1]["global_step"]) == last + 256


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(script, tmp_path):
    result = run_script(script, "--env", "tests.toy_envs:NanReward-v0", "--num-steps", "64",
                        "--num-minibatches", "4", "--total-timesteps", "640", "--checkpoint-every", "1",
                        "--run-dir", "run", cwd=tmp_path)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "diverged" in result.stderr
    # NaN rewards start at step 201, inside the 4th batch; the 3rd update's checkpoint is the last good one.
    checkpoint = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert checkpoint["global_step"] == 192
    assert all(torch.isfinite(t).all() for t in checkpoint["agent"].values())


BAD_INPUT = [
    (["--env", "NoSuchEnv-v0"], "cannot make environment"),
    (["--env", "tests.toy_envs:DictObs-v0"], "supported: a flat (1-D) Box"),
    (["--env", "tests.toy_envs:ImageObs-v0"], "supported: a flat (1-D) Box"),
    (["--env", "tests.toy_envs:MultiDiscreteAct-v0"], "supported: Discrete or a 1-D Box"),
    (["--num-envs", "0"], "must be a positive integer"),
    (["--num-steps", "-3"], "must be a positive integer"),
    (["--total-timesteps", "ten"], "must be a positive integer"),
    (["--gamma", "1.5"], "must be in [0, 1]"),
    (["--gae-lambda", "-0.1"], "must be in [0, 1]"),
    (["--num-steps", "100", "--num-minibatches", "32"], "does not divide"),
    (["--total-timesteps", "1000"], "less than one batch"),
    (["--device", "tpu"], "invalid choice"),
    (["--seed", "-1"], "must be an integer in [0, 4294967296)"),  # NumPy's seeding would fail later
    (["--seed", str(2**32)], "must be an integer in [0, 4294967296)"),
    (["--eval", "missing/model.pt", "--seed", "-1"], "must be an integer in [0, 4294967296)"),
    (["--eval", "missing/model.pt"], "does not exist"),
    (["--resume", "missing"], "does not exist"),
]


@pytest.mark.parametrize("flags,message", BAD_INPUT, ids=[" ".join(f) for f, _ in BAD_INPUT])
def test_bad_input_gets_one_line_and_no_traceback(script, tmp_path, flags, message):
    result = run_script(script, *flags, cwd=tmp_path)
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()  # nothing was created for a run that never started


def test_bad_checkpoints(script, trained, tmp_path):
    corrupt = tmp_path / "model.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    not_ours = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, not_ours)
    run_dir, _ = trained(script)
    cases = [(["--eval", corrupt], "unreadable"), (["--eval", not_ours], "not a model.pt"),
             (["--eval", run_dir / "model.pt", "--env", "Pendulum-v1"], "expects")]
    for flags, message in cases:
        result = run_script(script, *flags, cwd=tmp_path)
        assert result.returncode != 0 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_one_line(script, tmp_path):
    result = run_script(script, *tiny(script), "--device", "cuda", "--run-dir", "run", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "no CUDA device" in result.stderr and not (tmp_path / "run").exists()


def test_resume_refuses_another_algorithms_run(script, trained):
    run_dir, _ = trained(script)
    other = next(name for name in SCRIPTS if name != script)
    result = run_script(other, "--resume", run_dir, "--total-timesteps", "256", cwd=run_dir.parent)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert f"is a {script} run, this script is {other}" in result.stderr


def test_resume_with_a_run_dir_is_refused(script, trained):
    run_dir, _ = trained(script)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in run_dir.iterdir())
    result = run_script(script, "--resume", run_dir, "--run-dir", "elsewhere", "--total-timesteps", "256",
                        cwd=run_dir.parent)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "--run-dir cannot be given with --resume" in result.stderr
    assert sorted((p.name, p.stat().st_mtime_ns) for p in run_dir.iterdir()) == before
    assert not (run_dir.parent / "elsewhere").exists()


def test_the_eta_counts_days(module, capsys, tmp_path):
    """27.8 hours left at 100 steps per second: '1d 03:46:40', not a clock that wrapped."""
    run = module.Run.__new__(module.Run)  # only what log() reads
    run.args = module.parse_args(["--total-timesteps", "10000000"])
    run.dir, run.games, run.tb, run.elapsed, run.start_step, run.global_step = tmp_path, [], None, 0.0, 0, 0
    run.start_time = time.time() - 1.0
    run.global_step = 100  # 100 steps in about a second
    run.log([], {})
    eta = capsys.readouterr().out.split("ETA ")[1].strip()
    assert re.fullmatch(r"1d 0[34]:\d\d:\d\d", eta), eta


def test_no_private_torch_api(script):
    """A copied file must survive another torch release: nothing under torch._ is used."""
    assert not re.search(r"torch\._", (REPO / f"{script}.py").read_text())


def test_existing_run_directory_is_never_overwritten(script, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    result = run_script(script, *tiny(script), "--run-dir", "run", cwd=tmp_path)
    assert result.returncode != 0 and "already exists" in result.stderr
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["notes.txt"]


def test_default_run_directory_name(script, tmp_path):
    assert run_script(script, *tiny(script), "--seed", "7", cwd=tmp_path).returncode == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_dir.name.startswith(f"CartPole-v1__{script}__7__")


def test_several_envs_and_continuous_actions(script, tmp_path):
    result = run_script(script, *tiny(script), "--env", "Pendulum-v1", "--num-envs", "2",
                        "--total-timesteps", "256", "--run-dir", "run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [int(r["global_step"]) for r in rows(tmp_path / "run" / "progress.csv")] == [128, 256]


def test_tensorboard_and_video_extras(script, tmp_path):
    pytest.importorskip("tensorboard")
    pytest.importorskip("moviepy")
    result = run_script(script, *tiny(script), "--tensorboard", "--capture-video", "--run-dir", "run", cwd=tmp_path,
                        env={"SDL_VIDEODRIVER": "dummy"})
    assert result.returncode == 0, result.stderr
    assert list((tmp_path / "run").glob("events.out.tfevents.*"))
    assert list((tmp_path / "run" / "videos").glob("*.mp4"))  # env 0's first episode
    result = run_script(script, "--eval", "run/model.pt", "--eval-episodes", "3", "--capture-video",
                        cwd=tmp_path, env={"SDL_VIDEODRIVER": "dummy"})
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "run").glob("eval-videos-*/*.mp4"))) == 3  # every episode


def test_capture_video_without_a_display_is_one_line(script, tmp_path):
    pytest.importorskip("moviepy")
    result = run_script(script, *tiny(script), "--env", "tests.toy_envs:NoDisplay-v0", "--capture-video",
                        "--run-dir", "run", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "cannot render here (no display here)" in result.stderr
    assert not (tmp_path / "run").exists()


def test_importing_has_no_side_effects(script, tmp_path):
    code = f"import sys; sys.path.insert(0, {str(REPO)!r}); import torch; n = torch.get_num_threads(); " \
           f"import {script}; assert torch.get_num_threads() == n; import os; assert not os.listdir('.')"
    assert subprocess.run([sys.executable, "-c", code], cwd=tmp_path).returncode == 0


def test_resume_after_a_kill_drops_rows_logged_after_the_checkpoint(script, tmp_path):
    """A run killed outright (no Ctrl-C) has CSV rows past its last checkpoint; resuming must not count them twice."""
    assert run_script(script, *tiny(script), "--run-dir", "run", cwd=tmp_path).returncode == 0
    early = (tmp_path / "run" / "model.pt").read_bytes()  # the checkpoint at step 128
    assert run_script(script, "--resume", "run", "--total-timesteps", "192", cwd=tmp_path).returncode == 0
    (tmp_path / "run" / "model.pt").write_bytes(early)  # as if killed after logging step 192, before saving it
    result = run_script(script, "--resume", "run", "--total-timesteps", "256", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "progress.csv: dropped 1 rows" in result.stdout
    assert [int(r["global_step"]) for r in rows(tmp_path / "run" / "progress.csv")] == [64, 128, 192, 256]
    steps = [int(r["global_step"]) for r in rows(tmp_path / "run" / "episodes.csv")]
    assert steps == sorted(steps)


@pytest.mark.parametrize("script", ["ppo_clip", "ppo_penalty"])
def test_resume_to_a_larger_budget_continues_the_step_size_decay(script, tmp_path):
    """A finished annealed run resumed to a larger total goes on from its last step size
    down to 0 at the new total, instead of restarting the schedule higher up."""
    assert run_script(script, *tiny(script), "--anneal-lr", "--total-timesteps", "192",
                      "--run-dir", "run", cwd=tmp_path).returncode == 0
    result = run_script(script, "--resume", "run", "--total-timesteps", "384", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rates = [float(r["learning_rate"]) for r in rows(tmp_path / "run" / "progress.csv")]
    # 3e-4 * (1 - 0, 1/3, 2/3) before; after, the line from (128, 1e-4) to (384, 0).
    assert rates == pytest.approx([3e-4, 2e-4, 1e-4, 7.5e-5, 5e-5, 2.5e-5])


def test_schedule_progress_is_a_line_from_the_anchor_to_the_total(module):
    """Independent reference: the share done is linear in the step, 0 at a fresh start and 1
    at the total; from a resume anchor (step, share) the line runs on to (total, 1)."""
    assert module.schedule_progress(0, 1000, (0, 0.0)) == 0.0
    assert module.schedule_progress(250, 1000, (0, 0.0)) == pytest.approx(0.25)
    assert module.schedule_progress(1000, 1000, (0, 0.0)) == pytest.approx(1.0)
    # Resumed at step 400 with 0.5 done, to a total of 1,200: halfway there, 0.75 is done.
    assert module.schedule_progress(800, 1200, (400, 0.5)) == pytest.approx(0.75)
    assert module.schedule_progress(400, 1200, (400, 0.5)) == 0.5
