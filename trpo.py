"""TRPO, Trust Region Policy Optimization, in one file.

Trust Region Policy Optimization (Schulman et al. 2015, arXiv 1502.05477) collects a batch of
experience with the current policy pi_old, then takes ONE step on the policy: the step that most
improves a surrogate objective L(theta) = E[pi_theta(a|s) / pi_old(a|s) * A] while the mean KL
divergence from pi_old stays below delta (the paper's sections 4 and 5). The step is solved as in
the paper's appendix C:

    g = grad L(theta_old)                      surrogate gradient
    F = Hessian of mean KL[pi_old || pi_theta]  the Fisher matrix, used only as F v
    s = (F + lambda I)^-1 g                     by conjugate gradient, never forming F
    step = sqrt(2 delta / s^T (F + lambda I) s) * s
    backtrack on step until the *measured* KL <= delta and L improves

The damping lambda (--cg-damping; not in the paper) enters the step length too, as
in Schulman's modular_rl, Spinning Up, baselines' trpo_mpi and sb3-contrib: the full
step's KL under the quadratic model is delta * s^T F s / s^T (F + lambda I) s, not
delta. With lambda = 0.1 that is 0.7-0.9 delta on trained MuJoCo checkpoints, and the
median KL per update of 1M-step MuJoCo runs is 0.006-0.007 for delta = 0.01.

The first three lines are the natural policy gradient (Kakade 2002; TRPO section 7); what TRPO adds
is the step length from delta rather than a learning rate, and the line search that enforces the
constraint. --no-line-search takes the maximal step unchecked, which is the truncated natural policy
gradient of Duan et al. 2016 (arXiv 1604.06778). The value function is a separate network fitted
afterwards by Adam on the returns of Generalized Advantage Estimation (Schulman et al. 2015,
arXiv 1506.02438).

Map. Part 1, the algorithm: every setting (the run's too) -> agent (networks, normalizer) ->
environments -> torchrun's averaging -> rollout -> advantages (GAE) -> THE UPDATE -> training loop.
Part 2, which you may skip: command line, resume, vector env -> Atari's preprocessing (which shapes
what is learned on Atari) -> run directory, checkpoints, logs -> evaluation -> main. Part 1 uses one
name from Part 2: Run. All but this docstring, the algorithm's settings and its update is
byte-identical in the three scripts: `diff ppo_clip.py trpo.py` shows what TRPO changes.

Usage:
    python trpo.py --env CartPole-v1
    python trpo.py --env Hopper-v5 --seed 2
    python trpo.py --env ALE/Breakout-v5  # needs: pip install ale-py opencv-python-headless
    python trpo.py --eval runs/<run>/model.pt --eval-episodes 10
    python trpo.py --resume runs/<run> --total-timesteps 2000000
"""

import argparse
import csv
import dataclasses
import importlib.util
import json
import math
import os
import random
import re
import signal
import sys
import time
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributions import Categorical, Independent, Normal

# ############################ PART 1: THE ALGORITHM ############################


# === shared: learning settings ===
# Every setting is declared in this block, read top to bottom: every script's learning settings
# here, the algorithm's own and its Atari defaults next, the run's own (env, seed, files) last.
def add_learning_settings(group):
    """What every script learns with. Defaults: PPO paper Table 3 (MuJoCo), unless noted."""
    add, on_off = group.add_argument, argparse.BooleanOptionalAction
    add("--num-envs", type=positive_int, default=1, help="parallel environments N (PPO paper)")
    add("--num-steps", type=positive_int, default=2048, help="horizon T: steps per env per batch")
    add("--gamma", type=unit_interval, default=0.99, help="discount factor")
    add("--gae-lambda", type=unit_interval, default=0.95, help="GAE lambda: 0 TD(0), 1 Monte Carlo")
    add("--hidden-sizes", type=positive_int, nargs="+", default=[64, 64],
        help="hidden layers of the policy and of the value network (PPO paper)")
    add("--norm-obs", action=on_off, default=True,
        help="normalize observations by their running mean and std (baselines VecNormalize)")
    add("--norm-reward", action=on_off, default=True,
        help="divide rewards by the running std of the discounted return (VecNormalize)")
    add("--obs-clip", type=positive_float, default=10.0, help="clip normalized obs to +-this")
    add("--reward-clip", type=positive_float, default=10.0, help="clip scaled rewards to +-this")
    add("--sign-rewards", action=on_off, default=False,
        help="learn from each reward's sign alone; the logs keep raw scores (Mnih et al. 2015)")


def checked(convert, test, requirement):
    """An argparse type whose error names the requirement, not just "invalid value"."""
    def parse(text):
        try:
            if test(value := convert(text)):
                return value
        except ValueError:
            pass
        raise argparse.ArgumentTypeError(f"must be {requirement}, got {text!r}")
    return parse


positive_int = checked(int, lambda v: v > 0, "a positive integer")
positive_float = checked(float, lambda v: 0 < v < math.inf, "a positive number")
nonnegative_float = checked(float, lambda v: 0 <= v < math.inf, "a non-negative number")
unit_interval = checked(float, lambda v: 0 <= v <= 1, "in [0, 1]")
# === end shared ===


# --- TRPO's own settings ---
ALGORITHM = "trpo"
DESCRIPTION = "Trust Region Policy Optimization (arXiv 1502.05477)."
# Images: a CNN each. The natural-gradient step and the value fit move disjoint parameters.
SHARE_CNN = False


def add_algorithm_settings(group):
    """TRPO's settings; each default names its source: the TRPO paper, OpenAI Spinning
    Up's trpo.py, sb3-contrib's TRPO, or OpenAI baselines' trpo_mpi."""
    add, on_off = group.add_argument, argparse.BooleanOptionalAction
    add("--max-kl", type=positive_float, default=0.01,
        help="delta, the bound on the step's mean KL(pi_old || pi_new) (TRPO paper, all runs)")
    add("--cg-iters", type=positive_int, default=25,
        help="conjugate gradient iterations for s = F^-1 g (RL Zoo's tuned sb3-contrib; the "
             "paper's 10 reach only 58-75%% of the natural step's gain late on MuJoCo)")
    add("--cg-damping", type=nonnegative_float, default=0.1,
        help="lambda in (F + lambda I) s = g (not in the paper: Spinning Up, sb3-contrib)")
    add("--fvp-subsample", type=checked(float, lambda v: 0 < v <= 1, "in (0, 1]"), default=1.0,
        help="fraction of the batch the Fisher-vector products see (the paper: 0.1)")
    add("--line-search", action=on_off, default=True,
        help="shrink the step until KL <= --max-kl and the surrogate improves (appendix C); "
             "off: the truncated natural policy gradient")
    add("--backtrack-coef", type=checked(float, lambda v: 0 < v < 1, "in (0, 1)"), default=0.8,
        help="factor shrinking the step at each backtrack (Spinning Up; baselines 0.5)")
    add("--backtrack-iters", type=positive_int, default=10,
        help="step sizes tried before the step is rejected (Spinning Up, baselines)")
    add("--norm-adv", action=on_off, default=True,
        help="normalize advantages over the whole batch (sb3-contrib, baselines)")
    add("--vf-learning-rate", type=positive_float, default=1e-3,
        help="Adam step size of the value network (sb3-contrib, Spinning Up)")
    add("--vf-epochs", type=positive_int, default=10,
        help="value-fitting epochs over each batch (sb3-contrib's n_critic_updates)")
    add("--num-minibatches", type=positive_int, default=16,
        help="minibatches per value epoch: 2048 / 16 = sb3-contrib's 128")


# For ALE/* ids (Atari) these defaults replace the usual ones; a flag given still wins.
# The TRPO paper's Atari runs: delta 0.01, gamma 0.99 (the defaults), F v on 10% of the batch.
# Its 100K steps per update would make 10 updates of a 1M-step run and need 11 GB of float
# images per pass: here 8 actors x 512 steps. The value fit takes PPO's Atari Adam and epochs.
ATARI_SOURCE = ("the TRPO paper's Atari runs (fvp-subsample); PPO paper Table 5 for the value "
                "fit and the actors; Mnih et al. 2015's reward signs")
ATARI_SETTINGS = {"total_timesteps": 10_000_000, "num_envs": 8, "num_steps": 512,
                  "fvp_subsample": 0.1, "vf_learning_rate": 2.5e-4, "vf_epochs": 3,
                  "num_minibatches": 16,  # 4,096 / 16 = PPO's Atari minibatch of 256
                  "norm_reward": False, "sign_rewards": True}



# === shared: run settings ===
SEED_RANGE = 2**32  # NumPy's global seed takes [0, 2^32); a resumed run's seed wraps around it
seed_int = checked(int, lambda v: 0 <= v < SEED_RANGE, f"an integer in [0, {SEED_RANGE})")


def add_run_settings(parser):
    """The run's own settings: what to train on, for how long, where, and what to keep."""
    add, on_off = parser.add_argument, argparse.BooleanOptionalAction
    add("--env", default="CartPole-v1", help="Gymnasium id: vector or image observations, "
        "Discrete or Box actions; ALE/* ids (Atari) take the Atari defaults (--eval: the model's)")
    add("--seed", type=seed_int, default=1, help="seed of Python, NumPy, torch and the envs")
    add("--total-timesteps", type=positive_int, default=1_000_000,
        help="environment steps in all, rounded down to whole batches (PPO paper, MuJoCo)")
    add("--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto: cuda, if "
        "there is one, for images; the cpu for vectors (small MLPs are slower on a GPU)")
    add("--torch-threads", type=positive_int, default=1,
        help="torch intra-op threads: for small networks more threads only contend")
    add("--run-dir", help="a new directory (None: runs/<env>__<algorithm>__<seed>__<time>)")
    add("--checkpoint-every", type=positive_int, default=10,
        help="save model.pt every this many updates, at the end and on Ctrl-C")
    add("--tensorboard", action=on_off, default=False, help="write TensorBoard scalars too")
    add("--capture-video", action=on_off, default=False,
        help="MP4s of env 0 (training) or of every episode (--eval); needs moviepy")
    either = parser.add_mutually_exclusive_group().add_argument  # --resume or --eval, not both
    either("--resume", metavar="RUN_DIR", help="go on with RUN_DIR's model.pt and settings")
    either("--eval", metavar="CHECKPOINT", help="evaluate a model.pt instead of training")
    add("--eval-episodes", type=positive_int, default=10, help="episodes for --eval")
    add("--stochastic-eval", action=on_off, default=False,
        help="sample --eval's actions instead of taking the mean or most likely one")
# === end shared ===


# === shared: agent ===
POLICY_HEAD_GAIN = 0.01  # near-zero logits / means: the first policy is near uniform or centred
VALUE_HEAD_GAIN = 1.0
HIDDEN_GAIN = math.sqrt(2)  # OpenAI baselines' scale for hidden layers, as in every PPO copying it
STD_EPSILON = 1e-8  # keeps the normalizer's division finite for a constant feature
PIXEL_MAX = 255.0  # images are uint8: dividing by this scales them to [0, 1]
CNN_CONVS = ((32, 8, 4), (64, 4, 2), (64, 3, 1))  # (filters, kernel, stride) of each conv
CNN_HIDDEN = 512
MIN_IMAGE_SIZE = 36  # the smallest side that leaves CNN_CONVS a pixel to look at
IMAGES_PER_PASS = 256  # a no-grad pass over a batch of images takes this many at a time


class RunningMeanStd(nn.Module):
    """Running mean and variance of a stream of vectors, merged batch by batch with Chan
    et al.'s (1979) parallel formula, exact up to rounding. Buffers: state_dict saves them."""

    def __init__(self, shape):
        super().__init__()
        # float64: a million small updates would drift in float32.
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(shape, dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))

    @torch.no_grad()
    def update(self, x):  # x: (B, *shape)
        x = x.to(torch.float64)
        batch_count, batch_mean, batch_var = x.shape[0], x.mean(0), x.var(0, unbiased=False)
        total = self.count + batch_count
        delta = batch_mean - self.mean
        m2 = (self.var * self.count + batch_var * batch_count
              + delta**2 * self.count * batch_count / total)
        self.mean += delta * batch_count / total
        self.var.copy_(m2 / total)
        self.count.copy_(total)


def mlp(in_dim, hidden_sizes, out_dim, out_gain):
    """Tanh MLP, orthogonal weights (Saxe et al. 2014) scaled by a gain, zero biases (Huang
    et al. 2022, detail 2): better-conditioned first steps than PyTorch's default init."""
    layers, sizes = [], [in_dim, *hidden_sizes, out_dim]
    for i, (width, size) in enumerate(zip(sizes[:-1], sizes[1:])):
        layer = nn.Linear(width, size)
        nn.init.orthogonal_(layer.weight, out_gain if i == len(sizes) - 2 else HIDDEN_GAIN)
        nn.init.zeros_(layer.bias)
        layers += [layer, nn.Tanh()]
    return nn.Sequential(*layers[:-1])  # no Tanh after the output layer


def cnn(channels, height, width):
    """ReLU network of Mnih et al. 2015 (DQN), as baselines ppo2 and CleanRL run it on Atari (the
    PPO paper, section 6.4, cites A3C's smaller one), up to its features: the CNN_CONVS
    convolutions, then CNN_HIDDEN units; initialized as mlp is. Takes (B, C, H, W) in [0, 1]."""
    layers = []
    for filters, kernel, stride in CNN_CONVS:
        layers += [nn.Conv2d(channels, filters, kernel, stride=stride), nn.ReLU()]
        height, width = ((size - kernel) // stride + 1 for size in (height, width))
        channels = filters
    layers += [nn.Flatten(), nn.Linear(channels * height * width, CNN_HIDDEN), nn.ReLU()]
    for layer in (layer for layer in layers if hasattr(layer, "weight")):
        nn.init.orthogonal_(layer.weight, HIDDEN_GAIN)
        nn.init.zeros_(layer.bias)
    return nn.Sequential(*layers)


class Agent(nn.Module):
    """Policy and value networks: MLPs for vectors (obs_shape (obs_dim,)), CNNs for images ((C, H,
    W) or (H, W, C)), one CNN under both heads with share_cnn. The observation normalizer lives in
    buffers, saved with the weights; only training's `obs_rms.update` changes it. Methods take raw
    observations (B, *obs_shape), but the *_from_* ones. Policy: categorical (Discrete), or a
    diagonal Gaussian with a learned, state-independent log-std (Box; TRPO appendix D)."""

    def __init__(self, obs_shape, action_dim, continuous, hidden_sizes=(64, 64), norm_obs=True,
                 obs_clip=10.0, share_cnn=False):
        super().__init__()
        self.config = dict(obs_shape=list(obs_shape), action_dim=action_dim, continuous=continuous,
                           hidden_sizes=list(hidden_sizes), norm_obs=norm_obs, obs_clip=obs_clip,
                           share_cnn=share_cnn)  # load_agent rebuilds the agent from it
        self.image, self.continuous, self.obs_clip = len(obs_shape) == 3, continuous, obs_clip
        self.norm_obs = norm_obs and not self.image  # images are scaled instead
        if self.image:
            # Channels come first or last; either way they are the smallest dimension.
            self.channels_last = obs_shape[-1] < obs_shape[0]
            c, h, w = (obs_shape[2], *obs_shape[:2]) if self.channels_last else obs_shape
            features = cnn(c, h, w)  # under a linear head each: an mlp without hidden layers
            self.critic = nn.Sequential(*features, *mlp(CNN_HIDDEN, (), 1, VALUE_HEAD_GAIN))
            self.actor = nn.Sequential(*(features if share_cnn else cnn(c, h, w)),
                                       *mlp(CNN_HIDDEN, (), action_dim, POLICY_HEAD_GAIN))
        else:
            self.obs_rms = RunningMeanStd(tuple(obs_shape))
            self.critic = mlp(obs_shape[0], hidden_sizes, 1, VALUE_HEAD_GAIN)
            self.actor = mlp(obs_shape[0], hidden_sizes, action_dim, POLICY_HEAD_GAIN)
        if continuous:
            # std = 1 at the start: wide exploration over actions scaled to about [-1, 1].
            self.actor_logstd = nn.Parameter(torch.zeros(action_dim))

    def normalize(self, obs):  # (B, *obs_shape) -> the networks' input
        if self.image:  # uint8 (B, C, H, W) or (B, H, W, C) -> float (B, C, H, W) in [0, 1]
            x = obs.float() / PIXEL_MAX
            return x.permute(0, 3, 1, 2) if self.channels_last else x
        if not self.norm_obs:
            return obs
        std = torch.sqrt(self.obs_rms.var + STD_EPSILON)
        # Clipping bounds what one outlier state can do to the first layer.
        return ((obs - self.obs_rms.mean) / std).clamp(-self.obs_clip, self.obs_clip).to(obs.dtype)

    def outputs_from_normalized(self, x):  # (the actor's logits or means (B, A), V (B,))
        if not (self.image and self.config["share_cnn"]):
            return self.actor(x), self.critic(x)[:, 0]
        features = self.actor[:-1](x)  # both networks end in their head, after one trunk: once
        return self.actor[-1](features), self.critic[-1](features)[:, 0]

    @torch.no_grad()
    def score(self, obs, value=True):
        """(pi, V) of a whole batch, without gradients (V None unless `value`). Images go
        IMAGES_PER_PASS at a time: the activations stay in the CPU's caches (1.9x faster over
        4,096 Breakout frames, with the same bits as one pass)."""
        rows = IMAGES_PER_PASS if self.image else len(obs)
        out, values = zip(*(self.outputs_from_normalized(x) if value else (self.actor(x), None)
                            for x in map(self.normalize, obs.split(rows))))
        return self.policy_from_output(torch.cat(out)), torch.cat(values) if value else None

    def policy_from_output(self, out):  # the actor's logits or means (B, A) -> pi(.|s)
        # validate_args=False: the checks cost more than these networks; the inputs are ours.
        if self.continuous:
            std = self.actor_logstd.exp().expand_as(out)
            # Independent sums log-probs and entropies over the action dimensions.
            return Independent(Normal(out, std, validate_args=False), 1, validate_args=False)
        return Categorical(logits=out, validate_args=False)

    def get_value(self, obs):  # V(s), (B,)
        return self.critic(self.normalize(obs))[:, 0]

    def distribution(self, obs):  # pi(.|s), batch shape (B,)
        return self.policy_from_output(self.actor(self.normalize(obs)))

    @torch.no_grad()
    def sample_action(self, obs):  # a ~ pi(.|s), (B,) or (B, A), without a Distribution's upkeep
        out = self.actor(self.normalize(obs))  # logits or means, (B, action_dim)
        if self.continuous:
            return out + self.actor_logstd.exp() * torch.randn_like(out)
        # Gumbel-max trick: argmax(logits + Gumbel noise) is an exact sample of
        # softmax(logits); Gumbel noise is -log(E) with E ~ Exponential(1).
        return (out - torch.empty_like(out).exponential_().log()).argmax(dim=-1)
# === end shared ===


# === shared: environments ===
# The N environments step together in a Gymnasium vector env (Part 2 makes it: Atari, videos)
# whose autoreset mode matters for time limits. A time limit (truncation) cuts an
# episode in a state that is not terminal, whose value V(s_final) belongs in the return. Gymnasium's
# default, NEXT_STEP, resets on the *next* call, a wasted step whose action is ignored; SAME_STEP
# resets at once and hands s_final over in `infos["final_obs"]`: every step is a real transition.
AUTORESET = gym.vector.AutoresetMode.SAME_STEP
# === end shared ===


# === shared: distributed ===
# Synchronous data parallelism, as in DeepMind's distributed PPO (Heess et al. 2017, arXiv
# 1707.02286): `torchrun --nproc_per_node N X.py` starts N copies (ranks; Part 2 joins them up),
# each with its own environments and batch, which average what they must to take the same step:
# PPO the gradients and the KL behind its decisions; TRPO the policy gradient, the Fisher-vector
# products, the line search's measurements and the value gradients. Normalizers merge every rank's
# data. Under plain `python X.py` there is one copy and all of this does nothing.
def world():  # (rank, world size) of this copy; (0, 1) when not launched by torchrun
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def all_reduce_mean_(tensor):  # the mean over the ranks, in place; every rank gets the same bits
    if world()[1] > 1:
        dist.all_reduce(tensor)
        tensor /= world()[1]
    return tensor


def average_gradients(params):  # the ranks' mean, in one all-reduce of their concatenation
    if world()[1] > 1:
        grads = [p.grad for p in params if p.grad is not None]
        flat = all_reduce_mean_(torch.cat([g.reshape(-1) for g in grads]))
        for g, averaged in zip(grads, flat.split([g.numel() for g in grads])):
            g.copy_(averaged.view_as(g))


def all_gather_rows(x):  # every rank's (B, ...) x, concatenated in rank order: (world * B, ...)
    if world()[1] == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world()[1])]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)
# === end shared ===


# === shared: rollout ===
@dataclasses.dataclass
class Rollout:
    """One batch of experience: num_steps (T) steps of num_envs (N) environments."""
    obs: torch.Tensor  # (T, N, *obs_shape) raw observations s_t; images stay uint8
    actions: torch.Tensor  # (T, N) for Discrete, (T, N, action_dim) for Box; unclipped samples
    logprobs: torch.Tensor  # (T, N) log pi_old(a_t | s_t)
    values: torch.Tensor  # (T, N) V(s_t) under the value network that acted
    rewards: torch.Tensor  # (T, N) raw environment rewards r_t
    dones: torch.Tensor  # (T, N) 1.0 where the episode ended at step t, for whatever reason
    bootstrap: torch.Tensor  # (T, N) gamma * V(s_final) where a time limit cut it, else 0
    next_value: torch.Tensor  # (N,) V(s_T) of the observation after the last step


@torch.no_grad()
def collect_rollout(envs, agent, obs, num_steps, gamma, episodes, warm_up=False):
    """num_steps steps of every env from observations `obs` (N, ...): returns the Rollout and the
    observations the next one starts from. `episodes` (Part 2) keeps whole games' raw returns for
    the logs. `warm_up` seeds the observation normalizer from this rollout before it is scored."""
    device, action_space = next(agent.parameters()).device, envs.single_action_space
    # Each step's data is staged in NumPy and made a tensor once at the end: writing a NumPy
    # row costs far less than a small torch copy, T times over. Images stay uint8 (4x smaller).
    obs_np = np.empty((num_steps, *np.shape(obs)), np.uint8 if agent.image else np.float32)
    rewards_np, dones_np = np.empty((2, num_steps, len(obs)), dtype=np.float32)  # (T, N) each
    actions, cuts = [], []  # cuts: (t, which envs a time limit cut at step t, their final obs)

    def as_input(o):  # observations as the agent takes them: float32, or uint8 images
        return torch.as_tensor(np.asarray(o, dtype=obs_np.dtype), device=device)

    for t in range(num_steps):
        obs_np[t] = obs
        actions.append(agent.sample_action(as_input(obs_np[t])))  # (N,) or (N, A)
        env_action = actions[-1].cpu().numpy()
        if isinstance(action_space, gym.spaces.Box):
            # Clip only what the env sees: the rollout keeps the unclipped sample, the one
            # the Gaussian policy actually drew, and its log-prob is computed from it.
            env_action = np.clip(env_action, action_space.low, action_space.high)
        obs, reward, terminated, truncated, infos = envs.step(env_action)
        done = terminated | truncated  # (N,) bool
        rewards_np[t], dones_np[t] = reward, done
        cut = truncated & ~terminated
        if cut.any():
            cuts.append((t, cut, np.stack(infos["final_obs"][cut])))
        # A lost life (Atari, Part 2) ends the episode for GAE, not the game the logs count.
        life_lost = infos.get("final_info", {}).get("life_lost", np.zeros_like(done))
        episodes.step(reward, done & ~life_lost)
    all_obs, actions = torch.from_numpy(obs_np).to(device), torch.stack(actions)
    if warm_up:
        # A fresh normalizer only clips to +-obs_clip. Seeded before the scoring below, it makes
        # pi_old the policy the first update starts from. The acting policy saw raw inputs, but
        # its 0.01 head (POLICY_HEAD_GAIN) kept it nearly blind to them: pi_old / pi_acting is
        # within about 1% of 1 on average on MuJoCo's first batches.
        # all_gather_rows: every rank's rows, so all ranks normalize alike; in one, these.
        agent.obs_rms.update(all_gather_rows(all_obs.flatten(0, 1)))
    # Scored in batched passes after the steps: the networks did not change during them,
    # so these are the numbers each step would have computed, at a fraction of the cost.
    policy, values = agent.score(all_obs.flatten(0, 1))  # pi(.|s), V(s) of the T * N rows
    # Where a time limit cut an episode, V(s_final) belongs in the return (Pardo et al. 2018).
    bootstrap = torch.zeros(num_steps, len(obs), device=device)  # (T, N)
    for t, cut, final_obs in cuts:
        value = agent.get_value(as_input(final_obs))
        bootstrap[t, torch.as_tensor(cut, device=device)] = gamma * value
    logprobs = policy.log_prob(actions.flatten(0, 1)).view(num_steps, -1)  # (T, N)
    return Rollout(all_obs, actions, logprobs, values.view(num_steps, -1),
                   torch.from_numpy(rewards_np).to(device), torch.from_numpy(dones_np).to(device),
                   bootstrap, agent.get_value(as_input(obs))), obs
# === end shared ===


# === shared: advantages ===
class RewardScaler(RunningMeanStd):
    """Divide rewards by the running std of the discounted return, then clip.

    Returns in the thousands make badly scaled value targets; dividing by a running std keeps them
    near unit size (Engstrom et al. 2020, "Implementation Matters"). The mean is not subtracted:
    shifting rewards would change the optimal policy where episode length depends on behaviour (a
    per-step alive bonus, say)."""

    def __init__(self, num_envs, gamma, clip):
        super().__init__(())
        self.gamma, self.clip = gamma, clip
        self.discounted = np.zeros(num_envs)  # running discounted return of each env, (N,)

    def observe(self, rewards, dones):  # (T, N) each: one rollout's rewards into the statistics
        rewards, dones = rewards.cpu().double().numpy(), dones.cpu().bool().numpy()
        returns = np.empty_like(rewards)  # (T, N); a NumPy loop, as in compute_gae
        for t in range(rewards.shape[0]):
            self.discounted *= self.gamma
            self.discounted += rewards[t]
            returns[t] = self.discounted
            self.discounted[dones[t]] = 0.0  # an episode ended: its successor starts from 0
        self.update(all_gather_rows(torch.from_numpy(returns.reshape(-1))))  # every rank's

    def scale(self, rewards):
        std = torch.sqrt(self.var + STD_EPSILON).to(rewards.dtype)
        return (rewards / std).clamp(-self.clip, self.clip)


def compute_gae(rewards, values, dones, next_value, gamma, gae_lambda):
    """Generalized Advantage Estimation (GAE paper arXiv 1506.02438 section 3;
    PPO paper eqs. 11-12), computed backwards in one pass.

        delta_t = r_t + gamma * V(s_{t+1}) * (1 - done_t) - V(s_t)
        A_t     = delta_t + gamma * lambda * (1 - done_t) * A_{t+1}

    rewards, values, dones: (T, N); next_value: (N,) is V of the observation after the last step.
    done_t = 1 means the episode ended at step t, so s_{t+1} is the first state of a new episode:
    neither its value nor the recursion crosses that boundary. A time limit's bootstrap
    gamma * V(s_final) must already be in r_t. Returns (advantages, returns = advantages + values).
    """
    # The loop runs in NumPy: T small steps cost several times less there than as torch ops.
    r, v, d, v_last = (x.detach().cpu().numpy() for x in (rewards, values, dones, next_value))
    advantages = np.zeros_like(r)  # (T, N)
    last = np.zeros_like(v_last)  # A_{t+1}, (N,)
    for t in reversed(range(r.shape[0])):
        value_next = v_last if t == r.shape[0] - 1 else v[t + 1]
        not_done = 1.0 - d[t]
        delta = r[t] + gamma * value_next * not_done - v[t]
        last = delta + gamma * gae_lambda * not_done * last
        advantages[t] = last
    advantages = torch.as_tensor(advantages, device=values.device)
    return advantages, advantages + values


@dataclasses.dataclass
class Batch:
    """A rollout flattened over (T, N) into B = T * N samples for the update."""
    obs: torch.Tensor  # (B, *obs_shape)
    actions: torch.Tensor  # (B,) or (B, action_dim)
    logprobs: torch.Tensor  # (B,)
    values: torch.Tensor  # (B,)
    advantages: torch.Tensor  # (B,)
    returns: torch.Tensor  # (B,) the value targets


def make_batch(rollout, reward_scaler, gamma, gae_lambda, sign_rewards=False):
    """Rollout -> flat batch with GAE advantages and value targets. With `sign_rewards` the
    learner sees each reward's sign alone (Mnih et al. 2015's Atari clipping, used by the
    PPO paper): games score on scales far apart. The reward scaler first takes in this
    rollout's rewards, so the first batch of a run is already scaled. The time-limit
    bootstrap gamma * V(s_final) is added after scaling: V is learned in scaled units."""
    rewards = rollout.rewards.sign() if sign_rewards else rollout.rewards
    if reward_scaler is not None:
        reward_scaler.observe(rewards, rollout.dones)
        rewards = reward_scaler.scale(rewards)
    advantages, returns = compute_gae(rewards + rollout.bootstrap, rollout.values, rollout.dones,
                                      rollout.next_value, gamma, gae_lambda)
    return Batch(*(x.flatten(0, 1) for x in (rollout.obs, rollout.actions, rollout.logprobs,
                                             rollout.values, advantages, returns)))
# === end shared ===


# --- The update: TRPO ---
# Precision: everything here runs in float32, the networks' own dtype; no global float64 default.
# That suffices because every quantity is a mean over the batch of O(1) terms (advantages are
# normalized), F is damped so CG's system has eigenvalues >= --cg-damping, and CG runs a few dozen
# iterations at most. The one place that needs care is the surrogate improvement, a small difference
# of two large sums: see surrogate_gain.
ADAM_EPS = 1e-5  # ppo2's and sb3's value; PyTorch's 1e-8 lets tiny second moments make huge steps
ADVANTAGE_EPS = 1e-8  # keeps advantage normalization finite when all advantages are equal
CG_RESIDUAL_TOL = 1e-10  # CG stops once r^T r falls below this (baselines' and sb3-contrib's cg)
# The line search's acceptance rule (appendix C: "ensuring that we improve the
# nonlinear objective while satisfying the nonlinear constraint"):
KL_SLACK = 1.0  # accept only a measured mean KL <= KL_SLACK * max_kl, a hard bound (baselines: 1.5)
MIN_IMPROVEMENT = 0.0  # ... and only a surrogate gain above this: it must strictly improve


def policy_parameters(agent):
    """What the trust-region step moves: the actor (and, for Box actions, its log-std)."""
    return [p for name, p in agent.named_parameters() if not name.startswith("critic.")]


def policy_and_old(agent, obs):
    """pi_theta(.|s) with its graph, and pi_old(.|s): the same numbers, detached. One forward
    pass gives both, and the KL or log-ratio between them is exactly 0 at theta = theta_old."""
    out = agent.actor(agent.normalize(obs))  # (B, A) logits or means
    with torch.no_grad():
        old = agent.policy_from_output(out.detach())
    return agent.policy_from_output(out), old


def on_trunk(agent, params):
    """(P,) bool over flat_params(params): True but on the policy head (its last layer, log-std)."""
    head = {id(p) for p in [*agent.actor[-1].parameters(), getattr(agent, "actor_logstd", None)]}
    return torch.cat([torch.full((p.numel(),), id(p) not in head, device=p.device) for p in params])


def flat_params(params):
    """The parameters as one new vector (P,), detached: a copy, not a view."""
    return torch.cat([p.detach().reshape(-1) for p in params])


@torch.no_grad()
def set_flat_params(params, flat):
    """Copy a (P,) vector into the parameters, in flat_params' order. Copying
    writes the exact bits, so set_flat_params(ps, flat_params(ps)) is a no-op."""
    offset = 0
    for p in params:
        p.copy_(flat[offset:offset + p.numel()].view_as(p))
        offset += p.numel()


def flat_grad(output, params, create_graph=False, retain_graph=None):
    """d output / d params as one vector (P,); zeros for parameters it does not reach."""
    grads = torch.autograd.grad(output, params, create_graph=create_graph,
                                retain_graph=retain_graph, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1)
                      for g, p in zip(grads, params)])


def surrogate_gain(logratio, advantages):
    """L(theta) - L(theta_old), where L(theta) = E[pi_theta(a|s) / pi_old(a|s) * A]
    is TRPO's surrogate (section 2), importance-sampled from the batch (section 5).

    Since the ratio is 1 at theta_old, the gain is E[(ratio - 1) * A]: the same gradient as L, and
    the improvement the line search checks, without subtracting two nearly equal means. expm1 gives
    ratio - 1 in full float32 precision for a 0.01-KL step's tiny log-ratios; exp(x) - 1 rounds."""
    return (torch.expm1(logratio) * advantages).mean()


def mean_kl(old_dist, new_dist):
    """Mean over states of KL[pi_old(.|s) || pi_theta(.|s)]: TRPO's D_KL-bar (section 4),
    the practical stand-in for the maximum over states that its theory bounds."""
    return torch.distributions.kl_divergence(old_dist, new_dist).mean()


def fisher_vector_product(kl_grad, params, vector, damping):
    """(F + damping * I) v without forming F (P x P): TRPO appendix C.1.

    F is the Hessian of the mean KL[pi_old || pi_theta] at theta = theta_old, which equals the
    Fisher information matrix there (the KL's gradient is zero at its minimum, and its curvature is
    E[grad log pi grad log pi^T]). `kl_grad` is grad_theta of that KL as a flat (P,) vector built
    with create_graph=True, pi_old detached; differentiating kl_grad . v once more gives F v
    (Pearlmutter 1994), for about one more backward pass. The damping (not in the paper) lifts every
    eigenvalue by `damping`: directions the batch says nothing of get no huge steps."""
    return flat_grad(kl_grad @ vector, params, retain_graph=True) + damping * vector


def conjugate_gradient(Avp, b, iters, residual_tol):
    """Approximately solve A x = b for symmetric positive definite A, given only
    v -> A v (Hestenes and Stiefel 1952; Nocedal and Wright algorithm 5.2).

    x starts at 0: then r = b needs no product, and stopping early leaves x in the span of b, A b,
    A^2 b, ...: after one iteration x is the gradient itself, scaled, so few iterations give a
    partly natural gradient, never garbage. Stops after `iters` products, when
    r^T r <= residual_tol, or when the curvature p^T A p is not positive (NaN included): A is then
    not positive definite along p (too little damping, or a NaN in the batch), and x as it stands
    is returned, with the number of products A v it took."""
    x = torch.zeros_like(b)
    r = b.clone()  # residual b - A x
    p = b.clone()  # search direction, A-conjugate to the ones before
    rr = r @ r
    for products in range(iters):
        if rr <= residual_tol:
            return x, products
        Ap = Avp(p)
        curvature = p @ Ap
        if not curvature > 0:
            return x, products + 1
        alpha = rr / curvature
        x += alpha * p
        r -= alpha * Ap
        rr, rr_old = r @ r, rr
        p = r + (rr / rr_old) * p
    return x, iters


def backtracking_line_search(params, full_step, measure, max_kl, backtrack_coef, backtrack_iters):
    """Try theta_old + backtrack_coef^i * full_step for i = 0, 1, ...; keep the first that passes
    the nonlinear checks (TRPO appendix C: "we shrink beta exponentially until the objective
    improves", with the KL constraint as an infinite penalty).

    measure() -> (surrogate gain, mean KL) of the parameters as they are now. Returns (accepted,
    backtracks, gain, kl). When no step passes, the parameters are restored to theta_old bit for bit
    and (False, backtrack_iters, 0.0, 0.0) is returned: the policy did not move."""
    theta_old = flat_params(params)
    fraction = 1.0
    for backtracks in range(backtrack_iters):
        set_flat_params(params, theta_old + fraction * full_step)
        gain, kl = measure()
        # NaN fails both comparisons: a step that broke the network is never kept.
        if kl <= KL_SLACK * max_kl and gain > MIN_IMPROVEMENT:
            return True, backtracks, gain, kl
        fraction *= backtrack_coef
    set_flat_params(params, theta_old)
    return False, backtrack_iters, 0.0, 0.0


def value_loss(new_values, returns):
    """Half the mean squared error to the GAE returns (half: its gradient is the error)."""
    return 0.5 * ((new_values - returns) ** 2).mean()


def normalize_advantages(advantages):
    """Zero mean, unit std over the whole batch. TRPO's step is the same for g scaled by any
    factor: only the mean's shift, and CG's absolute tolerance, see this. One sample: as is."""
    if advantages.numel() < 2:
        return advantages
    return (advantages - advantages.mean()) / (advantages.std() + ADVANTAGE_EPS)


def fit_value_function(agent, optimizer, batch, epochs, num_minibatches):
    """Regress V(s) on the GAE returns: `epochs` passes of minibatch Adam steps.
    `optimizer` holds only the critic, and V reads only the critic, so the policy
    cannot move here. Returns the mean loss over the steps."""
    batch_size, minibatch_size = batch.obs.shape[0], batch.obs.shape[0] // num_minibatches
    total, steps = torch.zeros(()), 0
    for epoch in range(epochs):
        order = torch.randperm(batch_size, device=batch.obs.device)
        for start in range(0, batch_size, minibatch_size):
            mb = order[start:start + minibatch_size]
            v_loss = value_loss(agent.get_value(batch.obs[mb]), batch.returns[mb])
            optimizer.zero_grad(set_to_none=True)
            v_loss.backward()
            # The ranks' mean gradient (average_gradients), so all take the same step.
            average_gradients(agent.critic.parameters())
            optimizer.step()
            total, steps = total + v_loss.detach().cpu(), steps + 1
    return all_reduce_mean_(total).item() / steps  # the ranks' mean


def make_learner(agent, args):
    """(optimizers, state carried between updates). Adam for the value network only: the policy
    moves by the natural gradient step. Nothing else carries over: delta is fixed, g and F are
    the batch's."""
    adam = torch.optim.Adam(agent.critic.parameters(), lr=args.vf_learning_rate, eps=ADAM_EPS)
    return {"value_adam": adam}, {}


def update(agent, optimizers, state, batch, args, progress):
    """One trust-region step on the policy (TRPO appendix C), then the value fit.

    `progress` is unused: the step's size comes from --max-kl, not a schedule. Returns the
    diagnostics logged in progress.csv; booleans as 0/1."""
    params = policy_parameters(agent)
    theta_old = flat_params(params)  # (P,)
    advantages = normalize_advantages(batch.advantages) if args.norm_adv else batch.advantages
    # pi_old, from the forward pass g is taken through (the normalizer has not moved since the
    # rollout): not batch.logprobs, so that the log-ratio at theta_old is exactly 0.
    dist, old_dist = policy_and_old(agent, batch.obs)
    old_logprob = old_dist.log_prob(batch.actions)  # (B,)

    def measure():
        dist, _ = agent.score(batch.obs, value=False)
        gain = surrogate_gain(dist.log_prob(batch.actions) - old_logprob, advantages)
        # Averaged over ranks, so every rank accepts or rejects the same step.
        measured = all_reduce_mean_(torch.stack([gain, mean_kl(old_dist, dist)]))
        return measured[0].item(), measured[1].item()

    # g, the gradient of the surrogate L at theta_old: the right-hand side of A x = g (appendix C).
    logratio = dist.log_prob(batch.actions) - old_logprob  # (B,), all 0
    g = all_reduce_mean_(flat_grad(surrogate_gain(logratio, advantages), params))  # (P,), all ranks

    # F v, the Fisher-vector product, on a random subsample of the states
    # (appendix C; the paper used 10% of the batch to save computation).
    fvp_obs = batch.obs
    if args.fvp_subsample < 1.0:
        keep = torch.randperm(batch.obs.shape[0], device=batch.obs.device)
        fvp_obs = batch.obs[keep[:math.ceil(args.fvp_subsample * len(keep))]]  # (B', ...)
    fvp_dist, fvp_old = policy_and_old(agent, fvp_obs)
    fvp_kl = mean_kl(fvp_old, fvp_dist)  # 0 at theta_old; its Hessian is F
    kl_grad = flat_grad(fvp_kl, params, create_graph=True)  # (P,)

    def fvp(v):
        # Averaged over ranks: F is then the Fisher matrix of all ranks' states together.
        return all_reduce_mean_(fisher_vector_product(kl_grad, params, v, args.cg_damping))

    # s ~= F^-1 g, the natural gradient direction, by --cg-iters CG iterations (appendix C).
    s, cg_iters = conjugate_gradient(fvp, g, args.cg_iters, CG_RESIDUAL_TOL)  # (P,), products
    Fs = fvp(s)  # one more product gives both s^T (F + lambda I) s and CG's true residual
    sFs = (s @ Fs).item()
    g_norm = g.norm().item()
    cg_residual = (Fs - g).norm().item() / g_norm if g_norm > 0 else 0.0  # ||F s - g|| / ||g||
    # The quadratic model's KL, 1/2 s^T F s, as a sum over parameters of s_i (F s)_i: the share
    # of it on all but the policy head (images: the CNN) shows where the step spends delta.
    sF = s * (Fs - args.cg_damping * s)  # (P,)
    total = sF.sum().item()
    trunk_kl_share = sF[on_trunk(agent, params)].sum().item() / total if total > 0 else 0.0

    accepted, backtracks, gain, kl = False, 0, 0.0, 0.0
    if sFs > 0 and math.isfinite(sFs):
        # The maximal step beta * s, beta = sqrt(2 delta / s^T F s) in appendix C: where the
        # quadratic model of the KL, 1/2 beta^2 s^T F s, reaches delta. fvp is damped, so this
        # step lands somewhat inside the trust region (the module docstring says how far).
        full_step = math.sqrt(2.0 * args.max_kl / sFs) * s  # (P,)
        if args.line_search:
            accepted, backtracks, gain, kl = backtracking_line_search(
                params, full_step, measure, args.max_kl, args.backtrack_coef, args.backtrack_iters)
        else:
            # The natural policy gradient step, unchecked (TRPO section 7, after Kakade 2002).
            set_flat_params(params, theta_old + full_step)
            accepted, (gain, kl) = True, measure()
    if not accepted:
        print(f"[{ALGORITHM}] policy step rejected after {backtracks} backtracks "
              f"(s^T (F + lambda I) s = {sFs:.3g}); the policy is unchanged", flush=True)
    step = flat_params(params) - theta_old  # (P,) zero when rejected
    expected = (g @ step).item()  # the linear model's gain, to compare with the measured one

    v_loss = fit_value_function(agent, optimizers["value_adam"], batch, args.vf_epochs,
                                args.num_minibatches)
    return {"kl": kl, "surrogate_improvement": gain, "expected_improvement": expected,
            "backtracks": backtracks, "step_accepted": int(accepted),
            "step_norm": step.norm().item(), "cg_residual": cg_residual, "cg_iters": cg_iters,
            "trunk_kl_share": trunk_kl_share,
            "value_loss": v_loss, "entropy": all_reduce_mean_(old_dist.entropy().mean()).item()}


# === shared: training loop ===
def schedule_progress(step, total, anchor):
    """The share of the linear schedules (step size, clip range) done at `step`: a line from
    `anchor` = (step, share) to (total, 1). A fresh run's anchor is (0, 0); a resumed one's, its
    last update's, so a larger --total-timesteps stretches the rest of a decay (see Run)."""
    start, done = anchor
    return done + (1.0 - done) * ((step - start) / (total - start))


def train(args):
    """Collect a batch, estimate its advantages, update the agent; repeat until the budget is
    spent. Everything around this loop is Part 2's Run. Returns a summary dict."""
    run = Run(args)  # Part 2: checks the input, opens the run directory; resume, logs, checkpoints
    try:
        envs, obs = run.envs, run.obs  # seeded by Run, before the networks: their weights too
        agent = Agent(**run.spaces, hidden_sizes=args.hidden_sizes, norm_obs=args.norm_obs,
                      obs_clip=args.obs_clip, share_cnn=SHARE_CNN).to(run.device)
        optimizers, algorithm_state = make_learner(agent, args)
        reward_scaler = (RewardScaler(args.num_envs, args.gamma, args.reward_clip)
                         if args.norm_reward else None)
        run.begin(agent, optimizers, algorithm_state, reward_scaler)  # resumes, if asked to
        batch_size = args.num_envs * args.num_steps * run.world_size  # all ranks together
        while run.global_step + batch_size <= args.total_timesteps and not run.stop_requested():
            progress = schedule_progress(run.global_step, args.total_timesteps, run.anchor)
            warm_up = agent.norm_obs and run.global_step == 0  # a fresh run's first rollout
            rollout, obs = collect_rollout(envs, agent, obs, args.num_steps, args.gamma,
                                           run.episodes, warm_up)
            batch = make_batch(rollout, reward_scaler, args.gamma, args.gae_lambda,
                               args.sign_rewards)
            stats = update(agent, optimizers, algorithm_state, batch, args, progress)
            if agent.norm_obs and not warm_up:
                # Only now, after the update: the acting policy and pi_old normalized alike.
                # Every rank merges every rank's observations, so all normalize alike.
                agent.obs_rms.update(all_gather_rows(batch.obs))
            run.end_update(batch_size, batch, stats, progress)  # counts, logs, checkpoints
        run.finish()
    finally:
        run.close()  # the environments and the logs
    return {"run_dir": str(run.dir), "global_step": run.global_step, "interrupted": run.stopped}
# === end shared ===


# ############################### PART 2: MACHINERY ################################
# You may stop reading here: the algorithm is all above, but for three things decided below that
# shape what is learned on some tasks: Atari's preprocessing (frame skip and max-pooling, 84x84
# grayscale, 4 stacked frames, no-op starts, FIRE, a lost life as the learner's episode end), the
# Atari defaults replacing the usual ones, and the seeding. The rest makes the file a dependable
# tool: command line, resume, checkpoints, logs, evaluation.


# === shared: command line ===
class UsageError(Exception):
    """Bad input: reported as one line on stderr, never a traceback."""


# Settings a resumed run may change; the rest are its own. NOT_SAVED: what to do now, not the run.
RESUMABLE = {"total_timesteps", "device", "torch_threads", "tensorboard", "checkpoint_every"}
NOT_SAVED = {"resume", "eval", "eval_episodes", "stochastic_eval", "run_dir"}


def build_parser():
    parser = argparse.ArgumentParser(description=DESCRIPTION, epilog=f"Atari: {ATARI_SOURCE}",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.error = lambda message: parser.exit(2, f"{parser.prog}: error: {message}\n")  # 1 line
    # Each group's description is its function's docstring, which names the defaults' source.
    add_algorithm_settings(parser.add_argument_group(ALGORITHM, add_algorithm_settings.__doc__))
    add_learning_settings(parser.add_argument_group("every script", add_learning_settings.__doc__))
    add_run_settings(parser.add_argument_group("the run", add_run_settings.__doc__))
    for action in parser._actions:  # both sets of defaults in --help
        if action.dest in ATARI_SETTINGS:
            action.help += f" (Atari: {ATARI_SETTINGS[action.dest]})"
    return parser


def parse_args(argv=None):
    """Parse and check the command line. argparse fills in a default only where the namespace it
    is given lacks the name: --eval keeps env None unless typed (the model's is then used), and
    --resume starts from the run's saved settings."""
    parser = build_parser()
    args = parser.parse_args(argv)
    ranks = int(os.environ.get("WORLD_SIZE", "1"))  # an update takes a batch from each copy
    if args.eval is not None:
        return parser.parse_args(argv, argparse.Namespace(env=None))
    if args.resume is not None:
        if args.run_dir is not None:
            raise UsageError("--run-dir cannot be given with --resume: a run goes on in its own")
        checkpoint = load_checkpoint(Path(args.resume) / "model.pt")
        if checkpoint["algorithm"] != ALGORITHM:
            raise UsageError(f"cannot resume: {args.resume} is a {checkpoint['algorithm']} run, "
                             f"this script is {ALGORITHM}")
        args = parser.parse_args(argv, argparse.Namespace(**checkpoint["settings"]))
        for name, value in checkpoint["settings"].items():
            if name not in RESUMABLE and getattr(args, name) != value:
                raise UsageError(f"--{name.replace('_', '-')} cannot change when resuming; it was "
                                 f"{value!r} (changeable: {', '.join(sorted(RESUMABLE))})")
        step = checkpoint["global_step"]
        if step + ranks * args.num_envs * args.num_steps > args.total_timesteps:
            raise UsageError(f"{args.resume} is already at step {step:,}; "
                             f"pass a larger --total-timesteps to continue it")
    elif is_atari(args.env):  # the Atari defaults, under whatever the command line gives
        parser.set_defaults(**ATARI_SETTINGS)
        args = parser.parse_args(argv)
    batch = args.num_envs * args.num_steps
    if args.total_timesteps < batch * ranks:
        raise UsageError(f"--total-timesteps {args.total_timesteps} is less than one batch of "
                         f"{batch * ranks} steps (--num-envs x --num-steps x {ranks} ranks)")
    if batch % args.num_minibatches != 0:
        raise UsageError(f"--num-minibatches {args.num_minibatches} does not divide the batch "
                         f"of {batch} steps (--num-envs x --num-steps)")
    return args


def start_distributed(device_name, image):
    """The device to use (see --device), after joining torchrun's process group if torchrun
    started us: each rank on its LOCAL_RANK's GPU when the ranks have GPUs, else on the CPU."""
    if device_name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but torch sees no CUDA device")
    cuda = device_name == "cuda" or device_name == "auto" and image and torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if cuda:
            device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
            torch.cuda.set_device(device)
        # NCCL carries only CUDA tensors, and some shared values live on the CPU (the
        # Ctrl-C flag, loss sums, the reward scaler's returns): a backend per device type.
        dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo")
    return device


def check_env(env_id, render=False):
    """Make the environment once, so that bad input fails before a run directory exists: an
    unknown id, unsupported spaces, and with `render` (--capture-video) a machine that cannot
    draw. Returns the sizes an Agent is built from."""
    if render and importlib.util.find_spec("moviepy") is None:  # RecordVideo writes MP4s with it
        raise UsageError("--capture-video needs moviepy: pip install moviepy")
    try:
        with warnings.catch_warnings():  # windowing libraries warn on stderr before failing
            warnings.simplefilter("ignore")
            env = make_env(env_id, render=render)()
            if render:
                env.reset(seed=0)
                env.render()
    except UsageError:
        raise
    except Exception as error:  # gymnasium, pygame, OpenGL and MuJoCo raise many types
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        if render:
            raise UsageError(f"--capture-video: {env_id} cannot render here ({reason}); MuJoCo "
                             f"without a display needs MUJOCO_GL=egl or osmesa") from None
        raise UsageError(f"cannot make environment {env_id!r}: {reason}") from None
    obs_space, action_space = env.observation_space, env.action_space
    env.close()
    shape = obs_space.shape if isinstance(obs_space, gym.spaces.Box) else ()
    image = len(shape) == 3 and obs_space.dtype == np.uint8
    if not (len(shape) == 1 or image and min(sorted(shape)[1:]) >= MIN_IMAGE_SIZE):
        raise UsageError(f"{env_id} has observation space {obs_space}; supported: a flat (1-D) "
                         f"Box, or uint8 images of at least {MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE} "
                         f"(a 3-D Box, channels first or last)")
    continuous = isinstance(action_space, gym.spaces.Box)
    if not (continuous and len(action_space.shape) == 1
            or isinstance(action_space, gym.spaces.Discrete)):
        raise UsageError(f"{env_id} has action space {action_space}; "
                         f"supported: Discrete or a 1-D Box")
    return {"obs_shape": [int(size) for size in shape], "continuous": continuous,
            "action_dim": int(action_space.shape[0] if continuous else action_space.n)}


def make_vector_env(env_id, num_envs, video_dir=None):
    """num_envs environments stepped together in this process, in AUTORESET mode (Part 1); videos
    of env 0. More cores go to more copies of the learner (torchrun), not to env subprocesses."""
    builders = [make_env(env_id, video_dir if i == 0 else None) for i in range(num_envs)]
    return gym.vector.SyncVectorEnv(builders, autoreset_mode=AUTORESET)


def make_env(env_id, video_dir=None, every_episode=False, render=False):
    """A builder of one environment (vector envs want builders); with `video_dir`, RecordVideo
    writes MP4s there: of every episode, or of episodes 0, 1, 8, 27, ..., 1000, 2000, ... (its
    default, for training); Atari games as played, before the preprocessing, one video a game."""
    def build():
        # render_mode only where frames are wanted: an environment of one's own may not take it
        kwargs = {"render_mode": "rgb_array"} if video_dir is not None or render else {}
        env = atari_game(env_id, **kwargs) if is_atari(env_id) else gym.make(env_id, **kwargs)
        if video_dir is not None:
            trigger = (lambda episode: True) if every_episode else None
            env = gym.wrappers.RecordVideo(env, str(video_dir), trigger, disable_logger=True)
        return atari_preprocessing(env) if is_atari(env_id) else env
    return build
# === end shared ===


# === shared: atari ===
# Atari (ALE/* ids) as the PPO paper's runs (OpenAI baselines) played it, after Mnih et al.
# 2015: no sticky actions; each action repeated for 4 frames, the last two max-pooled (sprites
# flicker); up to 30 no-op actions at the start, so games begin in different states; frames
# cut to 84x84 grayscale, 4 of them stacked (motion). ALE ends a game at 108,000 frames,
# a time limit the rollout bootstraps like any other. The learner sees a lost life as the
# end of an episode and, under --sign-rewards, only the rewards' signs (the Atari defaults).
# In games with a FIRE action, FIRE is pressed after every reset, a lost life's included.
ATARI_FRAME_SKIP, ATARI_NOOP_MAX, ATARI_SCREEN, ATARI_STACK = 4, 30, 84, 4


def is_atari(env_id):
    return "ALE/" in env_id  # also "ale_py:ALE/Pong-v5"


def atari_game(env_id, **kwargs):
    """The raw game, one frame a step: AtariPreprocessing repeats and pools frames itself."""
    try:
        ale_py = importlib.import_module("ale_py")
        ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Warning)  # no banner on stderr
        gym.register_envs(ale_py)  # registers the ALE/* ids
        importlib.import_module("cv2")  # AtariPreprocessing resizes frames with OpenCV
    except ImportError as error:
        raise UsageError(f"{env_id} needs ale-py and OpenCV: pip install ale-py "
                         f"opencv-python-headless ({error})") from None
    return gym.make(env_id.split(":")[-1], frameskip=1, repeat_action_probability=0.0, **kwargs)


def atari_preprocessing(game):
    game = gym.wrappers.AtariPreprocessing(game, noop_max=ATARI_NOOP_MAX, screen_size=ATARI_SCREEN,
                                           frame_skip=ATARI_FRAME_SKIP, terminal_on_life_loss=False)
    game = LifeLossEndsEpisode(game)
    if "FIRE" in game.unwrapped.get_action_meanings():
        game = FireAfterReset(game)
    return gym.wrappers.FrameStackObservation(game, ATARI_STACK)


class LifeLossEndsEpisode(gym.Wrapper):
    """A lost life ends the episode for the learner (terminated, info["life_lost"]) but not
    the game: the reset that follows goes on from where the life was lost; only a game over
    resets the game (baselines' EpisodicLifeEnv). The agent learns that a life is precious
    and still plays whole games (AtariPreprocessing's terminal_on_life_loss would restart
    the game after every life under autoreset)."""

    def __init__(self, env):
        super().__init__(env)
        self.lives, self.game_over, self.last = 0, True, None

    def reset(self, **kwargs):
        if self.game_over:
            self.last = self.env.reset(**kwargs)
            self.lives, self.game_over = self.env.unwrapped.ale.lives(), False
        return self.last

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        lives, self.game_over = self.env.unwrapped.ale.lives(), terminated or truncated
        if lives < self.lives and not self.game_over:
            terminated, info = True, {**info, "life_lost": True}
        self.lives, self.last = lives, (obs, {})
        return obs, reward, terminated, truncated, info


class FireAfterReset(gym.Wrapper):
    """Press FIRE after every reset: a new game's and, as this wraps LifeLossEndsEpisode, a lost
    life's (baselines' FireResetEnv around EpisodicLifeEnv: the PPO paper's code and CleanRL).
    Breakout serves the ball only on FIRE: a policy that never presses it, as a greedy one may,
    would play on without scoring to ALE's frame limit, 27,000 steps a game. The FIRE step's
    reward is dropped, as in baselines: it is 0 in the games that need FIRE to start."""

    def __init__(self, env):
        super().__init__(env)
        self.fire = env.unwrapped.get_action_meanings().index("FIRE")

    def reset(self, **kwargs):
        while True:
            self.env.reset(**kwargs)
            obs, _, terminated, truncated, info = self.env.step(self.fire)
            if not (terminated or truncated):
                return obs, info
            kwargs = {}  # FIRE itself ended the life or the game: reset again, without the seed
# === end shared ===


# === shared: checkpoints and logs ===
CHECKPOINT_FORMAT = 1
RECENT_EPISODES = 20  # episodes averaged in the console and progress.csv's return_mean


class TrainingDiverged(Exception):
    """A loss or statistic became NaN or infinite."""


def seed_everything(seed, envs):
    """Seed Python and NumPy (for any user code), torch (action sampling, minibatch order), each
    env with seed + index and the action spaces; return the first observations."""
    random.seed(seed)
    np.random.seed(seed % SEED_RANGE)
    torch.manual_seed(seed)
    envs.action_space.seed(seed)
    return envs.reset(seed=seed)[0]


class EpisodeTracker:
    """Raw return and length of each env's episode; those finished since the logs last took them,
    as (global_step, return, length)."""

    def __init__(self, num_envs, global_step, steps_per_call):
        self.returns, self.lengths = np.zeros(num_envs), np.zeros(num_envs, dtype=np.int64)
        self.global_step, self.steps_per_call, self.finished = global_step, steps_per_call, []

    def step(self, rewards, dones):  # (N,) each
        self.global_step += self.steps_per_call  # all ranks' environments step together
        self.returns += rewards
        self.lengths += 1
        for i in np.flatnonzero(dones):
            self.finished.append((self.global_step, float(self.returns[i]), int(self.lengths[i])))
        self.returns[dones], self.lengths[dones] = 0.0, 0


class Run:
    """All around the training loop: checks made before anything is written, the run directory
    (new, or --resume's), resuming, logs and checkpoints (rank 0 alone writes), and Ctrl-C."""

    def __init__(self, args):
        self.args, self.spaces = args, check_env(args.env, render=args.capture_video)
        if args.tensorboard and importlib.util.find_spec("tensorboard") is None:
            raise UsageError("--tensorboard needs tensorboard: pip install tensorboard")
        self.device = start_distributed(args.device, len(self.spaces["obs_shape"]) == 3)
        self.rank, self.world_size = world()
        self.dir = Path(args.resume or args.run_dir or Path("runs") / "__".join(
            [re.sub(r"[^\w.-]+", "_", args.env), ALGORITHM, str(args.seed),
             time.strftime("%Y%m%d-%H%M%S")]))
        self.checkpoint = args.resume and load_checkpoint(self.dir / "model.pt", self.device)
        self.settings = {k: v for k, v in vars(args).items() if k not in NOT_SAVED}
        if self.rank == 0:
            if not args.resume and self.dir.exists() and any(self.dir.iterdir()):
                raise UsageError(f"run directory {self.dir} already exists; pick another "
                                 f"--run-dir or continue it with --resume {self.dir}")
            self.dir.mkdir(parents=True, exist_ok=True)
            versions = {"python": sys.version.split()[0]} | {  # mujoco and ale_py only if imported
                name: sys.modules[name].__version__ for name in
                ("torch", "gymnasium", "numpy", "mujoco", "ale_py") if name in sys.modules}
            config = {"algorithm": ALGORITHM, "settings": self.settings,
                      "world_size": self.world_size, "versions": versions}
            text = json.dumps(config, indent=2)
            atomic_write(self.dir / "config.json", lambda tmp: tmp.write_text(text))
        torch.set_num_threads(args.torch_threads)  # process-wide: see --torch-threads
        resumed = self.checkpoint or {"global_step": 0, "updates": 0, "elapsed": 0.0}
        self.global_step, self.updates = resumed["global_step"], resumed["updates"]
        self.elapsed, ranks = resumed["elapsed"], resumed.get("world_size", self.world_size)
        if self.rank == 0:  # the first line says what trains, how far, and where it is kept
            print(f"[{ALGORITHM}] {'resuming' if args.resume else 'training'} {args.env} at step "
                  f"{self.global_step:,} of {args.total_timesteps:,} in {self.dir}", flush=True)
            if ranks != self.world_size:  # allowed: each rank steps its own --num-envs
                batch = args.num_envs * args.num_steps
                print(f"[{ALGORITHM}] the run had {ranks} ranks, now {self.world_size}: the global "
                      f"batch changes from {ranks * batch:,} to {self.world_size * batch:,} steps")
        # Where the schedules' line starts (see schedule_progress): a resumed run's last update.
        self.anchor = self.last = tuple(resumed.get("schedule", (0, 0.0)))
        self.episodes = EpisodeTracker(args.num_envs, self.global_step,
                                       args.num_envs * self.world_size)
        self.tb = self.previous_handler = None  # close() closes what was opened
        self.sigint = self.stopped = False
        # Last, so that nothing fails with the environments open before train's try/finally.
        video_dir = self.dir / "videos" if args.capture_video and self.rank == 0 else None
        self.envs = make_vector_env(args.env, args.num_envs, video_dir)
        # A resumed run plays new episodes, seeded by its step so they differ from the
        # ones already played; each rank's environments get their own seeds.
        self.obs = seed_everything(args.seed + self.global_step + self.rank * args.num_envs,
                                   self.envs)  # the first observations

    def begin(self, agent, optimizers, algorithm_state, reward_scaler):
        """Restore the checkpoint if resuming, start every rank from rank 0's weights,
        open the logs. From now on the first Ctrl-C asks the loop to stop."""
        self.learner = (agent, optimizers, algorithm_state, reward_scaler)
        if self.checkpoint:  # the same env: the settings cannot change on resume
            agent.load_state_dict(self.checkpoint["agent"])
            for name, optimizer in optimizers.items():
                optimizer.load_state_dict(self.checkpoint["optimizers"][name])
            algorithm_state.update(self.checkpoint["algorithm_state"])
            if reward_scaler is not None:
                reward_scaler.load_state_dict(self.checkpoint["reward_scaler"])
        for tensor in agent.state_dict().values() if self.world_size > 1 else []:
            dist.broadcast(tensor, src=0)  # every rank starts from rank 0's weights and statistics
        if self.rank == 0:
            # A run killed (not stopped with Ctrl-C) after its last checkpoint logged steps that
            # the resumed run logs anew: their rows go, or those steps would count twice.
            for path in (self.dir / "episodes.csv", self.dir / "progress.csv"):
                rows = read_csv(path)
                keep = [row.values() for row in rows if int(row["global_step"]) <= self.global_step]
                if len(keep) < len(rows):
                    print(f"[{ALGORITHM}] {path.name}: dropped {len(rows) - len(keep)} rows logged "
                          f"after the checkpoint at step {self.global_step:,}", flush=True)
                    path.unlink()
                    append_csv(path, keep, header=rows[0].keys())
            rows = read_csv(self.dir / "episodes.csv")  # resuming: carry the games on
            self.games = [(float(r["return"]), int(r["length"])) for r in rows]
            if self.args.tensorboard:
                from torch.utils.tensorboard import SummaryWriter  # optional: only if asked for
                self.tb = SummaryWriter(str(self.dir))
        self.previous_handler = signal.signal(signal.SIGINT, self.on_sigint)
        self.start_time, self.start_step = time.time(), self.global_step

    def on_sigint(self, signum, frame):
        """The first Ctrl-C stops after this update (a consistent checkpoint); a second, at once."""
        if self.sigint:
            raise KeyboardInterrupt
        self.sigint = True
        print(f"[{ALGORITHM}] Ctrl-C: saving a checkpoint after this update (again to quit now)",
              flush=True)

    def stop_requested(self):
        # A Ctrl-C on any rank stops them all, together: the ranks' mean of the flag is above 0.
        self.stopped = all_reduce_mean_(torch.tensor(float(self.sigint))).item() > 0
        return self.stopped

    def end_update(self, batch_size, batch, stats, progress):
        """Count the batch, refuse a non-finite loss, log, and checkpoint now and then."""
        self.last = (self.global_step, progress)  # the schedule's point, for a resumed run
        self.global_step += batch_size
        self.updates += 1
        parts = [self.episodes.finished] * self.world_size  # every rank's games, in rank order
        if self.world_size > 1:
            dist.all_gather_object(parts, self.episodes.finished)
        finished, self.episodes.finished = [game for part in parts for game in part], []
        if not all(math.isfinite(v) for v in stats.values()):
            raise TrainingDiverged(f"non-finite loss at step {self.global_step:,} ({stats}); "
                                   f"the last good checkpoint, if any, is {self.dir / 'model.pt'}")
        if self.rank == 0:
            var = batch.returns.var()  # explained variance: 1 a perfect V, 0 a constant's
            ev = math.nan if var == 0 else float(1 - (batch.returns - batch.values).var() / var)
            self.log(finished, {**stats, "explained_variance": ev})
        if self.updates % self.args.checkpoint_every == 0:
            self.save()

    def log(self, finished, stats):
        """episodes.csv (raw returns), progress.csv, TensorBoard, and the console line."""
        append_csv(self.dir / "episodes.csv", finished, ["global_step", "return", "length"])
        self.games += [(r, n) for _, r, n in finished]  # (return, length) of every game so far
        recent, seconds = self.games[-RECENT_EPISODES:], time.time() - self.start_time
        sps = (self.global_step - self.start_step) / seconds
        row = {"global_step": self.global_step, "time": round(self.elapsed + seconds, 3),
               "sps": round(sps, 1), "episodes": len(self.games),
               "return_mean": np.mean([r for r, _ in recent]) if recent else float("nan"),
               "length_mean": np.mean([n for _, n in recent]) if recent else float("nan"), **stats}
        append_csv(self.dir / "progress.csv", [row.values()], header=row.keys())
        for step, episode_return, _ in finished if self.tb else []:
            self.tb.add_scalar("episode/return", episode_return, step)
        for key, value in list(row.items())[1:] if self.tb else []:
            self.tb.add_scalar(f"progress/{key}", value, self.global_step)
        days, rest = divmod(round((self.args.total_timesteps - self.global_step) / sps), 86400)
        eta = (f"{days}d " if days else "") + time.strftime("%H:%M:%S", time.gmtime(rest))
        print(f"[{ALGORITHM}] step {self.global_step:,}/{self.args.total_timesteps:,} | return "
              f"{row['return_mean']:.1f} | length {row['length_mean']:.0f} | {sps:,.0f} SPS | "
              f"ETA {eta}", flush=True)

    def finish(self):  # the last checkpoint, after the budget is spent or Ctrl-C
        self.save()
        if self.rank == 0:
            script, model = Path(sys.argv[0]).name, self.dir / "model.pt"
            if self.stopped:
                print(f"[{ALGORITHM}] stopped at step {self.global_step:,}; continue with: "
                      f"python {script} --resume {self.dir}", flush=True)
            print(f"[{ALGORITHM}] saved {model}; evaluate it with: python {script} --eval {model}",
                  flush=True)

    def save(self):
        """model.pt: all that is needed to act (the agent with its normalizer) and to resume."""
        if self.rank != 0:
            return
        agent, optimizers, algorithm_state, reward_scaler = self.learner
        state = {"format": CHECKPOINT_FORMAT, "algorithm": ALGORITHM, "settings": self.settings,
                 "agent_config": agent.config, "agent": agent.state_dict(),
                 "optimizers": {name: opt.state_dict() for name, opt in optimizers.items()},
                 "algorithm_state": dict(algorithm_state),
                 "reward_scaler": reward_scaler and reward_scaler.state_dict(),
                 "global_step": self.global_step, "updates": self.updates, "schedule": self.last,
                 "world_size": self.world_size,
                 "elapsed": self.elapsed + time.time() - self.start_time}
        atomic_write(self.dir / "model.pt", lambda tmp: torch.save(state, tmp))

    def close(self):
        self.envs.close()
        if self.tb is not None:
            self.tb.close()
        if self.previous_handler is not None:
            signal.signal(signal.SIGINT, self.previous_handler)
        if self.world_size > 1:
            dist.barrier()  # leave together: a rank tearing down while another talks can abort
            dist.destroy_process_group()


def atomic_write(path, write):
    """write(tmp) a temporary file, then rename it over `path`: a crash leaves the old one whole."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def read_csv(path):  # a list of dicts, one per row; [] if the file is not written yet
    return list(csv.DictReader(path.read_text().splitlines())) if path.exists() else []


def append_csv(path, rows, header):  # a new file starts with `header`
    new_file = not path.exists()
    with open(path, "a", newline="") as f:
        csv.writer(f).writerows([header, *rows] if new_file else rows)


def load_checkpoint(path, device="cpu"):
    """Read a model.pt. weights_only=True: unpickling may build tensors and plain
    containers but never run code, so opening a checkpoint is safe."""
    if not Path(path).is_file():
        raise UsageError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # a corrupt file fails in zipfile, pickle or torch
        raise UsageError(f"checkpoint {path} is unreadable: corrupt, or not a weights-only "
                         f"torch file ({type(error).__name__})") from None
    if not (isinstance(checkpoint, dict) and checkpoint.get("format") == CHECKPOINT_FORMAT):
        raise UsageError(f"checkpoint {path} is not a model.pt written by these scripts")
    if "obs_dim" in checkpoint["agent_config"]:  # written before images (most benchmark runs')
        checkpoint["agent_config"]["obs_shape"] = [checkpoint["agent_config"].pop("obs_dim")]
    try:  # a network of other shapes than Agent builds: say, an edited CNN_CONVS
        Agent(**checkpoint["agent_config"]).load_state_dict(checkpoint["agent"])
    except (RuntimeError, TypeError):  # other shapes, or other arguments
        raise UsageError(f"checkpoint {path} holds a network of other shapes than this script's")
    return checkpoint


def load_agent(path, device="cpu"):  # the Agent of a model.pt, normalizer statistics included
    checkpoint = load_checkpoint(path, device)
    agent = Agent(**checkpoint["agent_config"]).to(device)
    agent.load_state_dict(checkpoint["agent"])
    return agent.eval()
# === end shared ===


# === shared: evaluation ===
@torch.no_grad()
def evaluate(agent, env_id, episodes, seed, device="cpu", deterministic=True, video_dir=None):
    """Play `episodes` whole episodes (Atari: whole games); return one dict each: the raw return,
    the length in steps and whether a time limit (ALE's frame limit) ended it rather than the game.
    Deterministic by default (the mean, or the most likely action): evaluation measures what the
    policy has learned, not its exploration noise. Episode i is reset with seed + i."""
    env, results = make_env(env_id, video_dir, every_episode=True)(), []
    try:
        for i in range(episodes):
            (obs, _), total, length, done = env.reset(seed=seed + i), 0.0, 0, False
            while not done:
                obs_t = torch.as_tensor(np.asarray(obs), device=device)[None]  # a batch of one
                dist = agent.distribution(obs_t if agent.image else obs_t.float())
                action = ((dist.mean if agent.continuous else dist.probs.argmax(-1))
                          if deterministic else dist.sample())[0].cpu().numpy()
                if agent.continuous:
                    action = np.clip(action, env.action_space.low, env.action_space.high)
                obs, reward, terminated, truncated, info = env.step(action)
                total, length, done = total + float(reward), length + 1, terminated or truncated
                if done and info.get("life_lost", False):  # Atari: the game goes on after the
                    (obs, _), done = env.reset(), False  # reset training sees (FIRE included)
            results.append({"return": total, "length": length,
                            "time_limit": bool(truncated and not terminated)})
    finally:
        env.close()
    return results


def run_evaluation(args):
    checkpoint = load_checkpoint(args.eval)
    env_id = args.env or checkpoint["settings"]["env"]
    spaces = check_env(env_id, render=args.capture_video)
    device = start_distributed(args.device, len(spaces["obs_shape"]) == 3)
    expected = {k: checkpoint["agent_config"][k] for k in spaces}
    if expected != spaces:
        raise UsageError(f"the checkpoint's agent expects {expected}, but {env_id} has {spaces}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    video_dir = Path(args.eval).parent / f"eval-videos-{stamp}" if args.capture_video else None
    results = evaluate(load_agent(args.eval, device), env_id, args.eval_episodes, args.seed,
                       device, deterministic=not args.stochastic_eval, video_dir=video_dir)
    returns, cut = [r["return"] for r in results], sum(r["time_limit"] for r in results)
    print(f"{env_id}: {len(returns)} episodes, return {np.mean(returns):.2f} "
          f"+- {np.std(returns):.2f}, {cut} ended by the time limit"
          + (f" (videos in {video_dir})" if video_dir else ""))
# === end shared ===


# === shared: main ===
def main(argv=None):
    prog = Path(sys.argv[0]).name
    try:
        args = parse_args(argv)
        if args.eval is not None:
            run_evaluation(args)
            return 0
        return 130 if train(args)["interrupted"] else 0
    except (UsageError, TrainingDiverged) as error:  # one line on stderr; exit 2 or 1
        usage = isinstance(error, UsageError)
        print(f"{prog}: {'error' if usage else 'training diverged'}: {error}", file=sys.stderr)
        return 2 if usage else 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; the last periodic checkpoint is kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    status = main()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # A torchrun worker skips Python's shutdown, where gloo's threads, torn down in any order,
        # now and then abort a run that finished ("terminate called without an active exception").
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)
# === end shared ===
