"""Atari as the PPO paper played it, checked against its definition on real ALE frames, and
the user's round trip on Breakout: train, evaluate, resume, refuse a mismatched game."""

import csv
import json
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import torch

from tests.conftest import REPO, SCRIPTS, load, run_script

ppo_clip = load("ppo_clip")
BREAKOUT = "ALE/Breakout-v5"


def breakout():
    return ppo_clip.make_env(BREAKOUT)()


def test_frames_are_max_pooled_pairs_resized_to_84_and_stacked_by_4():
    """Each step repeats the action for 4 raw frames; the observation's newest frame is the
    pixel-wise max of the last two, in grayscale, resized to 84x84 (area interpolation)."""
    env = breakout()
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
    assert all(np.array_equal(frame, obs[0]) for frame in obs)  # a new game: 4 copies of its frame
    ale, action_set, pooled_differs = env.unwrapped.ale, env.unwrapped._action_set, []
    for action in [1, 2, 2, 3, 0, 1, 2]:  # FIRE, RIGHT, RIGHT, LEFT, NOOP, ...
        state = ale.cloneState()  # play the 4 frames by hand, then replay them through the env
        raw, reward = [], 0.0
        for _ in range(ppo_clip.ATARI_FRAME_SKIP):
            reward += ale.act(action_set[action])
            raw.append(ale.getScreenGrayscale())
        ale.restoreState(state)
        expected = cv2.resize(np.maximum(raw[-2], raw[-1]), (84, 84), interpolation=cv2.INTER_AREA)
        new, r, terminated, truncated, _ = env.step(action)
        assert np.array_equal(new[-1], expected) and r == reward
        assert np.array_equal(new[:-1], obs[1:])  # the stack shifts by one frame
        pooled_differs.append(not np.array_equal(raw[-2], raw[-1]))
        obs = new
    assert any(pooled_differs)  # the ball moved between the pooled frames: the max mattered
    env.close()


def test_games_start_after_1_to_30_no_ops_and_fire():
    frames = []
    for seed in range(10):
        env = breakout()
        env.reset(seed=seed)
        # One raw frame per no-op, then FIRE for one step of ATARI_FRAME_SKIP frames.
        frames.append(env.unwrapped.ale.getEpisodeFrameNumber() - ppo_clip.ATARI_FRAME_SKIP)
        env.close()
    assert all(1 <= n <= ppo_clip.ATARI_NOOP_MAX for n in frames) and len(set(frames)) > 3
    assert "repeat_action_probability" in str(env.unwrapped.spec.kwargs)
    assert env.unwrapped.spec.kwargs["repeat_action_probability"] == 0.0  # no sticky actions


def test_a_lost_life_is_terminal_but_the_game_goes_on():
    env = breakout()
    env.reset(seed=0)
    ale, rng = env.unwrapped.ale, np.random.default_rng(0)
    lives = ale.lives()
    while True:
        _, _, terminated, truncated, info = env.step(rng.integers(4))
        if terminated:
            break
    assert info.get("life_lost") and ale.lives() == lives - 1
    frame = ale.getEpisodeFrameNumber()
    obs, _ = env.reset()  # what autoreset does: the game must not restart, FIRE serves a new ball
    assert ale.getEpisodeFrameNumber() == frame + ppo_clip.ATARI_FRAME_SKIP and ale.lives() == lives - 1
    assert all(np.array_equal(f, obs[0]) for f in obs)
    while not (terminated and not info.get("life_lost")):  # play to the game over
        _, _, terminated, truncated, info = env.step(rng.integers(4))
    assert ale.lives() == 0
    env.reset()
    assert ale.lives() == lives  # a new game: no-ops and FIRE only
    assert ale.getEpisodeFrameNumber() <= ppo_clip.ATARI_NOOP_MAX + ppo_clip.ATARI_FRAME_SKIP
    env.close()


def always(script, action, actions=4):
    """A Breakout agent whose most likely action is always `action`."""
    agent = script.Agent([ppo_clip.ATARI_STACK, ppo_clip.ATARI_SCREEN, ppo_clip.ATARI_SCREEN], actions, False,
                         share_cnn=script.SHARE_CNN)
    with torch.no_grad():
        head = agent.actor[-1]
        head.weight.zero_()
        head.bias.copy_(torch.nn.functional.one_hot(torch.tensor(action), actions).float())
    return agent


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_policy_that_never_fires_still_finishes_its_breakout_games(script):
    """FIRE serves after each reset and lost life: a greedy NOOP policy loses its 5 balls in a few
    hundred steps each, instead of waiting, unserved, for ALE's 27,000-step limit."""
    module = load(script)
    games = module.evaluate(always(module, action=0), BREAKOUT, episodes=2, seed=1)
    assert [game["time_limit"] for game in games] == [False, False]
    assert all(100 < game["length"] < 3000 for game in games), games
    assert all(game["return"] < 5 for game in games)  # it barely hits the ball


def test_pong_has_no_lives_to_lose_and_fire_starts_it():
    """Pong's action set has FIRE too; with no lives, a lost point ends nothing."""
    env = ppo_clip.make_env("ALE/Pong-v5")()
    env.reset(seed=0)
    assert env.unwrapped.ale.lives() == 0 and "FIRE" in env.unwrapped.get_action_meanings()
    reward, steps = 0.0, 0
    while reward == 0.0:  # up to the first point
        _, reward, terminated, truncated, info = env.step(0)
        steps += 1
        assert not (terminated or truncated or info.get("life_lost")), steps
    assert reward == -1.0  # NOOP loses the point, and the game goes on
    env.close()


@pytest.mark.parametrize("script", SCRIPTS)
def test_atari_defaults_in_help_in_the_run_and_under_flags(script):
    module = load(script)
    text = module.build_parser().format_help().replace("\n", " ")
    for name, value in module.ATARI_SETTINGS.items():
        assert f"(Atari: {value})" in " ".join(text.split()), name
    args = module.parse_args(["--env", BREAKOUT])
    assert all(getattr(args, name) == value for name, value in module.ATARI_SETTINGS.items())
    assert module.parse_args(["--env", BREAKOUT, "--num-envs", "3"]).num_envs == 3  # a flag given wins
    assert module.parse_args(["--env", "CartPole-v1"]).num_envs == 1  # other envs keep theirs


# The lightest update each script takes: what these tests check is the plumbing, not the learning.
LIGHT = {"ppo_clip": ["--update-epochs", "1"], "ppo_penalty": ["--update-epochs", "1"],
         "trpo": ["--vf-epochs", "1", "--cg-iters", "2"]}


@pytest.mark.parametrize("script", SCRIPTS)
def test_breakout_trains_evaluates_resumes_and_refuses_pong(script, tmp_path):
    small = ["--num-envs", "2", "--num-steps", "64", "--num-minibatches", "4", *LIGHT[script]]
    result = run_script(script, "--env", BREAKOUT, *small, "--total-timesteps", "256", "--run-dir", "run",
                        cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    settings = config["settings"]
    assert settings["sign_rewards"] is True and settings["norm_reward"] is False  # the Atari defaults
    assert "ale_py" in config["versions"] and "mujoco" not in config["versions"]  # what the run used
    with open(tmp_path / "run" / "progress.csv", newline="") as f:
        assert [int(r["global_step"]) for r in csv.DictReader(f)] == [128, 256]
    evaluation = run_script(script, "--eval", "run/model.pt", "--eval-episodes", "1", "--stochastic-eval",
                            cwd=tmp_path)
    assert evaluation.returncode == 0, evaluation.stderr
    assert evaluation.stdout.startswith(f"{BREAKOUT}: 1 episodes, return ")
    resumed = run_script(script, "--resume", "run", "--total-timesteps", "384", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    pong = run_script(script, "--eval", "run/model.pt", "--env", "ALE/Pong-v5", cwd=tmp_path)
    assert pong.returncode == 2 and len(pong.stderr.strip().splitlines()) == 1
    assert "'action_dim': 4" in pong.stderr and "'action_dim': 6" in pong.stderr


def test_without_ale_py_an_atari_id_gets_one_line_saying_what_to_install(tmp_path):
    (tmp_path / "ale_py.py").write_text("raise ImportError('No module named ale_py')\n")
    result = run_script("ppo_clip", "--env", BREAKOUT, cwd=tmp_path, env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "ppo_clip.py: error: ALE/Breakout-v5 needs ale-py and OpenCV: pip install ale-py "
        "opencv-python-headless (No module named ale_py)"]
    assert not (tmp_path / "runs").exists()


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def train_until(tmp_path, progress_rows, *args):
    """Start ppo_clip on Breakout and return the process once progress.csv has that many rows."""
    command = [sys.executable, str(REPO / "ppo_clip.py"), *args]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    progress, deadline = tmp_path / "run" / "progress.csv", time.monotonic() + 300
    while not (progress.exists() and len(rows(progress)) >= progress_rows) and time.monotonic() < deadline:
        time.sleep(0.2)
    return process


def test_breakout_survives_ctrl_c_and_sigkill_and_records_its_games(tmp_path):
    small = ["--num-envs", "2", "--num-steps", "32", "--num-minibatches", "2", "--checkpoint-every", "2"]
    process = train_until(tmp_path, 2, "--env", BREAKOUT, *small, "--total-timesteps", "100000",
                          "--run-dir", "run")
    process.send_signal(signal.SIGINT)  # Ctrl-C: a checkpoint after this update
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130 and "Traceback" not in stderr
    stopped = int(rows(tmp_path / "run" / "progress.csv")[-1]["global_step"])
    assert torch.load(tmp_path / "run" / "model.pt", weights_only=True)["global_step"] == stopped
    process = train_until(tmp_path, stopped // 64 + 3, "--resume", "run")
    process.kill()  # SIGKILL: no checkpoint of its own, rows past the last periodic one
    process.communicate(timeout=60)
    saved = torch.load(tmp_path / "run" / "model.pt", weights_only=True)["global_step"]
    result = run_script("ppo_clip", "--resume", "run", "--total-timesteps", saved + 128, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    steps = [int(r["global_step"]) for r in rows(tmp_path / "run" / "progress.csv")]
    assert steps == list(range(64, saved + 129, 64))  # every update once, none twice
    video = run_script("ppo_clip", "--eval", "run/model.pt", "--eval-episodes", "1", "--stochastic-eval",
                       "--capture-video", cwd=tmp_path)
    assert video.returncode == 0, video.stderr
    assert len(list((tmp_path / "run").glob("eval-videos-*/*.mp4"))) == 1  # one video of the whole game
