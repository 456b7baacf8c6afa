"""Learning from pixels: the CNN agent, images through the rollout, life loss, raw scores
under reward signs, an environment of one's own, and --device auto. Atari itself is in
tests/test_atari.py; these use the image environments of tests/toy_envs.py."""

import csv
import json
import shutil
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest
import torch

import tests.toy_envs  # noqa: F401  (registers the toy environments)
from tests.conftest import REPO, load, run_script

GAMMA, VALUE = 0.9, 2.0


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("shape", [(36, 36, 3), (3, 36, 36)])
def test_image_agent_scales_pixels_and_takes_either_channel_order(module, shape):
    torch.manual_seed(0)
    agent = module.Agent(obs_shape=shape, action_dim=2, continuous=False)
    obs = torch.randint(0, 256, (5, *shape), dtype=torch.uint8)
    x = agent.normalize(obs)
    channels_first = obs.permute(0, 3, 1, 2) if shape[-1] == 3 else obs
    assert x.shape == (5, 3, 36, 36) and x.dtype == torch.float32
    assert torch.equal(x, channels_first.float() / 255)  # scaled to [0, 1], never normalized
    assert not agent.norm_obs and not hasattr(agent, "obs_rms")
    dist = agent.distribution(obs)
    assert dist.sample().shape == agent.get_value(obs).shape == agent.sample_action(obs).shape == (5,)
    clone = module.Agent(**agent.config)
    clone.load_state_dict(agent.state_dict())
    assert torch.equal(clone.get_value(obs), agent.get_value(obs))


@pytest.mark.parametrize("share_cnn", [False, True])
def test_the_cnn_is_mnih_et_al_2015s(module, share_cnn):
    """32 8x8 filters stride 4, 64 4x4 stride 2, 64 3x3 stride 1, 512 units (the DQN network,
    which the PPO paper's released code ran on Atari), orthogonally initialized, under a
    linear head each for the policy and the value; one CNN for both under share_cnn."""
    torch.manual_seed(0)
    agent = module.Agent(obs_shape=(4, 84, 84), action_dim=6, continuous=False, share_cnn=share_cnn)
    for net, out, gain in ((agent.actor, 6, 0.01), (agent.critic, 1, 1.0)):
        layers = [layer for layer in net.modules() if isinstance(layer, (torch.nn.Conv2d, torch.nn.Linear))]
        assert [(type(layer).__name__, layer.weight.shape) for layer in layers] == [
            ("Conv2d", (32, 4, 8, 8)), ("Conv2d", (64, 32, 4, 4)), ("Conv2d", (64, 64, 3, 3)),
            ("Linear", (512, 64 * 7 * 7)), ("Linear", (out, 512))]
        assert [layer.stride for layer in layers[:3]] == [(4, 4), (2, 2), (1, 1)]
        head = layers[-1].weight
        assert torch.allclose(head @ head.T, gain**2 * torch.eye(out), atol=1e-6)
        flat = layers[1].weight.flatten(1)  # (64, 512): orthogonal rows, scaled by sqrt(2)
        assert torch.allclose(flat @ flat.T, 2 * torch.eye(64), atol=1e-4)
        assert all(torch.all(layer.bias == 0) for layer in layers)
    heads = (512 + 1) * (6 + 1)
    cnn_size = sum(p.numel() for p in agent.critic.parameters()) - (512 + 1)
    assert sum(p.numel() for p in agent.parameters()) == (1 if share_cnn else 2) * cnn_size + heads
    # Shared: the value loss alone moves the features the policy reads.
    obs = torch.randint(0, 256, (3, 4, 84, 84), dtype=torch.uint8)
    agent.get_value(obs).sum().backward()
    assert (agent.actor[0].weight.grad is not None) == share_cnn
    clone = module.Agent(**agent.config)  # a saved agent comes back shared or not, as it was
    clone.load_state_dict(agent.state_dict())
    assert (clone.actor[0] is clone.critic[0]) == share_cnn


@pytest.mark.parametrize("share_cnn", [False, True])
def test_policy_and_value_in_one_pass_equal_the_two_passes(module, share_cnn):
    """What the update and the rollout's scoring use: the same pi and V as the two networks
    apart, but a shared CNN runs once, not once per head."""
    torch.manual_seed(0)
    agent = module.Agent(obs_shape=(4, 36, 36), action_dim=3, continuous=False, share_cnn=share_cnn)
    obs = torch.randint(0, 256, (5, 4, 36, 36), dtype=torch.uint8)
    x = agent.normalize(obs)
    calls = []
    agent.actor[0].register_forward_hook(lambda *_: calls.append(1))
    logits, value = agent.outputs_from_normalized(x)
    assert len(calls) == 1  # the first convolution: once whether shared or not
    assert torch.allclose(logits, agent.actor(x), atol=1e-6)
    assert torch.allclose(value, agent.get_value(obs), atol=1e-6) and value.shape == (5,)
    # Vectors (and trpo's separate CNNs) take the two networks as before; a Gaussian too.
    vector = module.Agent(obs_shape=(3,), action_dim=2, continuous=True, norm_obs=False)
    x = torch.randn(4, 3)
    means, value = vector.outputs_from_normalized(x)
    assert torch.equal(means, vector.actor(x)) and torch.equal(value, vector.get_value(x))


@pytest.mark.parametrize("share_cnn", [False, True])
def test_scoring_a_batch_in_slices_gives_the_bits_of_one_pass(module, share_cnn):
    """Agent.score takes images IMAGES_PER_PASS at a time (faster on a CPU): the rollout's
    log-probs and values are those of one pass over the batch, up to rounding (a backend may
    round differently for another batch size; on Breakout's 84x84 frames it did not here)."""
    torch.manual_seed(0)
    agent = module.Agent(obs_shape=(4, 36, 36), action_dim=3, continuous=False, share_cnn=share_cnn)
    obs = torch.randint(0, 256, (module.IMAGES_PER_PASS * 2 + 7, 4, 36, 36), dtype=torch.uint8)
    with torch.no_grad():
        logits, value = agent.outputs_from_normalized(agent.normalize(obs))
    policy, scored = agent.score(obs)
    torch.testing.assert_close(policy.logits, agent.policy_from_output(logits).logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(scored, value, rtol=0, atol=1e-6)


def test_a_model_of_other_shapes_is_refused_in_one_line(tmp_path, monkeypatch):
    """An image model.pt of before the Nature CNN (16 and 32 filters, 256 units), or of an
    edited CNN_CONVS, cannot load into today's network: --eval and --resume say so in one
    line instead of a traceback, and the run directory is left as it was."""
    result = run_script("ppo_clip", "--env", "tests.toy_envs:PixelSide-v0", "--num-steps", "32",
                        "--num-minibatches", "2", "--total-timesteps", "32", "--run-dir", "run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    path = tmp_path / "run" / "model.pt"
    checkpoint = torch.load(path, weights_only=True)
    ppo_clip = load("ppo_clip")
    monkeypatch.setattr(ppo_clip, "CNN_CONVS", ((16, 8, 4), (32, 4, 2)))
    monkeypatch.setattr(ppo_clip, "CNN_HIDDEN", 256)
    checkpoint["agent"] = ppo_clip.Agent(**checkpoint["agent_config"]).state_dict()
    torch.save(checkpoint, path)
    before = sorted((p.name, p.stat().st_size) for p in (tmp_path / "run").iterdir())
    for flags in (["--eval", str(path)], ["--resume", "run", "--total-timesteps", "64"]):
        result = run_script("ppo_clip", *flags, cwd=tmp_path)
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert "holds a network of other shapes than this script's" in result.stderr
    assert sorted((p.name, p.stat().st_size) for p in (tmp_path / "run").iterdir()) == before


def test_ppo_shares_the_cnn_and_trpo_does_not(module):
    # TRPO's natural-gradient step and its value fit must move disjoint parameters.
    assert module.SHARE_CNN == (module.ALGORITHM != "trpo")


def test_check_env_describes_images_and_refuses_the_rest(module):
    assert module.check_env("PixelSide-v0") == {"obs_shape": [36, 36, 3], "continuous": False, "action_dim": 2}
    assert module.check_env("PixelSideChannelsFirst-v0")["obs_shape"] == [1, 36, 36]
    with pytest.raises(module.UsageError, match="uint8 images of at least 36x36"):
        module.check_env("ImageObs-v0")  # 8x8: too small for the CNN's strides


def image_rollout(module, env_id, shape, num_steps, num_envs):
    """One rollout of an agent whose V(s) = VALUE for every image: (buffer, episode tracker)."""
    envs = module.make_vector_env(env_id, num_envs=num_envs)
    try:
        obs = module.seed_everything(0, envs)
        agent = module.Agent(obs_shape=shape, action_dim=2, continuous=False)
        with torch.no_grad():
            agent.critic[-1].weight.zero_()  # the value's linear head on the CNN's features
            agent.critic[-1].bias.fill_(VALUE)
        tracker = module.EpisodeTracker(num_envs, 0, num_envs)
        buf, _ = module.collect_rollout(envs, agent, obs, num_steps, GAMMA, tracker)
    finally:
        envs.close()
    return buf, tracker


def test_images_stay_uint8_and_a_time_limit_bootstraps(module):
    """PixelSideTimeLimit-v0 never terminates; its time limit cuts every episode at 5 steps."""
    buf, _ = image_rollout(module, "PixelSideTimeLimit-v0", [36, 36, 3], num_steps=12, num_envs=2)
    assert buf.obs.dtype == torch.uint8 and set(buf.obs.unique().tolist()) == {0, 255}
    assert buf.dones[:, 0].nonzero().flatten().tolist() == [4, 9]
    assert buf.bootstrap[[4, 9]].flatten().tolist() == pytest.approx([GAMMA * VALUE] * 4)
    assert buf.bootstrap.count_nonzero() == 4


def test_a_lost_life_ends_the_learners_episode_not_the_logged_game(module):
    """LivesGame: 3 lives of 4 steps, 10 points a step. GAE sees an end every 4 steps and
    (with --sign-rewards) rewards of 1; the logs see games of 12 steps scoring 120."""
    buf, tracker = image_rollout(module, "tests.toy_envs:LivesGame-v0", [1, 36, 36], num_steps=24, num_envs=1)
    assert buf.dones[:, 0].nonzero().flatten().tolist() == [3, 7, 11, 15, 19, 23]
    assert buf.bootstrap.count_nonzero() == 0  # a lost life is terminal for the learner
    assert buf.obs[4, 0, 0, 0, 0].item() == 4  # the game went on after the first life, no reset
    assert tracker.finished == [(12, 120.0, 12), (24, 120.0, 12)]
    batch = module.make_batch(buf, None, GAMMA, gae_lambda=1.0, sign_rewards=True)
    returns = batch.returns.reshape(24)
    assert returns[3].item() == pytest.approx(1.0)  # the sign of 10, and nothing after the life
    assert returns[0].item() == pytest.approx(sum(GAMMA**k for k in range(4)))


def test_sign_rewards_leave_the_logs_raw(tmp_path):
    result = run_script("ppo_clip", "--env", "tests.toy_envs:LivesGame-v0", "--sign-rewards", "--no-norm-reward",
                        "--num-steps", "48", "--num-minibatches", "4", "--total-timesteps", "96",
                        "--run-dir", "run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [(r["return"], r["length"]) for r in rows(tmp_path / "run" / "episodes.csv")] == [("120.0", "12")] * 8
    assert float(rows(tmp_path / "run" / "progress.csv")[-1]["return_mean"]) == 120.0
    assert "return 120.0 | length 12" in result.stdout


@pytest.mark.learning
def test_each_script_learns_from_pixels(script, tmp_path):
    """PixelSide-v0: a random policy scores 4 of 8; seeing the square scores 8."""
    result = run_script(script, "--env", "tests.toy_envs:PixelSide-v0", "--num-steps", "256",
                        "--num-minibatches", "4", "--total-timesteps", "8192", "--run-dir", "run",
                        cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr
    returns = [float(r["return"]) for r in rows(tmp_path / "run" / "episodes.csv")]
    assert np.mean(returns[:64]) < 5.0 and np.mean(returns[-64:]) >= 6.5
    settings = json.loads((tmp_path / "run" / "config.json").read_text())["settings"]
    assert settings["env"] == "tests.toy_envs:PixelSide-v0"


def test_device_auto_takes_a_gpu_for_a_cnn_only(module, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with mock.patch.object(torch.cuda, "is_available", return_value=True):
        assert module.start_distributed("auto", False).type == "cpu"  # an MLP
        assert module.start_distributed("auto", True).type == "cuda"  # a CNN
        assert module.start_distributed("cpu", True).type == "cpu"
        assert module.start_distributed("cuda", False).type == "cuda"
    with mock.patch.object(torch.cuda, "is_available", return_value=False):
        assert module.start_distributed("auto", True).type == "cpu"


MY_ENVS = '''
import gymnasium as gym
import numpy as np


class Thermostat(gym.Env):
    """Keep a temperature near 0: a vector environment of one's own."""
    observation_space = gym.spaces.Box(-10.0, 10.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)  # 0: cool, 1: heat

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.temperature = self.np_random.uniform(-5, 5)
        return np.array([self.temperature], np.float32), {}

    def step(self, action):
        self.temperature += 1.0 if action == 1 else -1.0
        obs = np.array([self.temperature], np.float32)
        return obs, -abs(self.temperature), abs(self.temperature) > 9, False, {}


class Blink(gym.Env):
    """An image environment of one's own: press 1 when the screen is lit."""
    observation_space = gym.spaces.Box(0, 255, (36, 36, 1), np.uint8)
    action_space = gym.spaces.Discrete(2)

    def _obs(self):
        self.lit = bool(self.np_random.integers(2))
        return np.full((36, 36, 1), 255 * self.lit, np.uint8)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self._obs(), {}

    def step(self, action):
        reward = float(action == self.lit)
        return self._obs(), reward, False, False, {}


gym.register("Thermostat-v0", entry_point=Thermostat, max_episode_steps=50)
gym.register("Blink-v0", entry_point=Blink, max_episode_steps=20)
'''


def test_an_environment_of_ones_own_from_the_command_line_and_from_python(tmp_path):
    """As the README shows: my_envs.py beside a copied script, reached as my_envs:Name-v0."""
    (tmp_path / "my_envs.py").write_text(MY_ENVS)
    shutil.copy(REPO / "ppo_clip.py", tmp_path / "ppo_clip.py")
    command = [sys.executable, "ppo_clip.py", "--env", "my_envs:Thermostat-v0", "--num-steps", "64",
               "--num-minibatches", "4", "--total-timesteps", "128", "--run-dir", "vector"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    code = ("import ppo_clip\n"
            "status = ppo_clip.main(['--env', 'my_envs:Blink-v0', '--num-steps', '64', "
            "'--num-minibatches', '4', '--total-timesteps', '128', '--run-dir', 'image'])\n"
            "assert status == 0\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    for name, shape in (("vector", [1]), ("image", [36, 36, 1])):
        checkpoint = torch.load(tmp_path / name / "model.pt", weights_only=True)
        assert checkpoint["agent_config"]["obs_shape"] == shape and checkpoint["global_step"] == 128


def test_two_ranks_train_on_images(tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(REPO / "tests" / "replicas.py"), "ppo_clip", str(tmp_path), "--env",
               "tests.toy_envs:PixelSide-v0", "--num-steps", "32", "--num-minibatches", "2",
               "--total-timesteps", "128", "--run-dir", "run"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    assert len(ranks[0]) == 2
    for state0, state1 in zip(*ranks):
        assert all(torch.equal(state0[name], state1[name]) for name in state0)
    assert [int(r["global_step"]) for r in rows(tmp_path / "run" / "progress.csv")] == [64, 128]


def test_old_checkpoints_with_obs_dim_still_load(tmp_path):
    ppo_clip = load("ppo_clip")
    agent = ppo_clip.Agent(obs_shape=(3,), action_dim=2, continuous=False)
    config = {k: v for k, v in agent.config.items() if k != "obs_shape"}
    torch.save({"format": ppo_clip.CHECKPOINT_FORMAT, "agent_config": {"obs_dim": 3, **config},
                "agent": agent.state_dict()}, tmp_path / "model.pt")
    loaded = ppo_clip.load_agent(tmp_path / "model.pt")
    obs = torch.randn(4, 3)
    assert torch.equal(loaded.get_value(obs), agent.get_value(obs))
    committed = REPO / "benchmarks" / "results" / "Hopper-v5" / "ppo_clip" / "seed1" / "model.pt"
    assert ppo_clip.load_agent(committed).config["obs_shape"] == [11]  # the benchmarks' own, obs_dim
    torch.save({"format": ppo_clip.CHECKPOINT_FORMAT, "agent_config": {"widths": 3, **config},
                "agent": agent.state_dict()}, tmp_path / "other.pt")
    with pytest.raises(ppo_clip.UsageError, match="other shapes"):
        ppo_clip.load_agent(tmp_path / "other.pt")  # an argument Agent does not take: one line
