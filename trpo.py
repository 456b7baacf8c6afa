"""TRPO, Trust Region Policy Optimization, in one file.

Trust Region Policy Optimization (Schulman et al. 2015, arXiv 1502.05477)
collects a batch of experience with the current policy pi_old, then takes ONE
step on the policy: the step that most improves a surrogate objective
L(theta) = E[pi_theta(a|s) / pi_old(a|s) * A] while the mean KL divergence
from pi_old stays below delta (the paper's sections 4 and 5).
The step is solved as in the paper's appendix C:

    g = grad L(theta_old)                      surrogate gradient
    F = Hessian of mean KL[pi_old || pi_theta]  the Fisher matrix, used only as F v
    s = F^-1 g                                  by conjugate gradient, never forming F
    step = sqrt(2 delta / s^T F s) * s          the largest step the quadratic KL model allows
    backtrack on step until the *measured* KL <= delta and L improves

The first three lines are the natural policy gradient (Kakade 2002; TRPO
section 7); what TRPO adds is the step length from delta rather than a
learning rate, and the line search that enforces the constraint.
--no-line-search takes the maximal step unchecked, which is the truncated
natural policy gradient of Duan et al. 2016 (arXiv 1604.06778). The value
function is a separate network fitted afterwards by Adam on the returns of
Generalized Advantage Estimation (Schulman et al. 2015, arXiv 1506.02438).

The file reads top to bottom in the order of the algorithm:

    configuration -> seeding and device -> distributed -> environments -> agent -> rollout
    -> advantages (GAE) -> THE UPDATE -> logging and checkpoints -> evaluation
    -> training loop and main

Every section except the update (and this algorithm's own settings) is marked
"shared" and is byte-identical in ppo_clip.py, ppo_penalty.py and trpo.py, so
`diff ppo_clip.py trpo.py` shows exactly what one algorithm changes.

Usage:
    python trpo.py --env CartPole-v1
    python trpo.py --env Hopper-v5 --seed 2
    python trpo.py --eval runs/<run>/model.pt --eval-episodes 10
    python trpo.py --resume runs/<run> --total-timesteps 2000000
"""

import argparse
import csv
import dataclasses
import importlib.metadata
import importlib.util
import io
import json
import math
import os
import platform
import random
import re
import signal
import sys
import time
import warnings
from collections import deque
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributions import Categorical, Independent, Normal

# ==================================================================================
# Configuration: this algorithm's own settings
# ==================================================================================
ALGORITHM = "trpo"
DESCRIPTION = "Trust Region Policy Optimization (arXiv 1502.05477)."


def add_algorithm_args(parser):
    """TRPO's settings. Each default names its source: the TRPO paper, OpenAI
    Spinning Up's trpo.py, sb3-contrib's TRPO, or OpenAI baselines' trpo_mpi."""
    group = parser.add_argument_group("TRPO policy step")
    group.add_argument("--max-kl", type=positive_float, default=0.01,
                       help="delta, the bound on the mean KL(pi_old || pi_new) of one step (default: %(default)s; "
                            "TRPO paper, all its experiments; Spinning Up and sb3-contrib too)")
    group.add_argument("--cg-iters", type=positive_int, default=25,
                       help="conjugate gradient iterations for s = F^-1 g (default: %(default)s, as the RL Zoo's "
                            "tuned MuJoCo settings for sb3-contrib; the TRPO paper appendix C, Spinning Up and "
                            "baselines use 10, which on trained MuJoCo policies reach only 58-75%% of the natural "
                            "step's predicted gain: BENCHMARKS.md)")
    group.add_argument("--cg-damping", type=nonnegative_float, default=0.1,
                       help="lambda in (F + lambda I) s = g: keeps CG's system well conditioned (default: "
                            "%(default)s; not in the paper: Spinning Up and sb3-contrib, baselines 0.01-0.1)")
    group.add_argument("--fvp-subsample", type=positive_float, default=1.0,
                       help="fraction of the batch the Fisher-vector products see; 0.1 is cheaper and noisier "
                            "(default: %(default)s, all of it, as Spinning Up and sb3-contrib; the paper used 0.1)")
    group.add_argument("--line-search", action=argparse.BooleanOptionalAction, default=True,
                       help="shrink the maximal step until the measured KL <= --max-kl and the surrogate "
                            "improves; --no-line-search takes it unchecked: the truncated natural policy "
                            "gradient (default: %(default)s; TRPO paper appendix C)")
    group.add_argument("--backtrack-coef", type=positive_float, default=0.8,
                       help="factor in (0, 1) that shrinks the step at each backtrack (default: %(default)s; "
                            "Spinning Up and sb3-contrib; the paper only says 'exponentially', baselines 0.5)")
    group.add_argument("--backtrack-iters", type=positive_int, default=10,
                       help="step sizes tried before the step is rejected (default: %(default)s; Spinning Up, "
                            "sb3-contrib, baselines)")
    group.add_argument("--norm-adv", action=argparse.BooleanOptionalAction, default=True,
                       help="normalize advantages over the whole batch (default: %(default)s; sb3-contrib, "
                            "baselines)")
    group = parser.add_argument_group("TRPO value function")
    group.add_argument("--vf-learning-rate", type=positive_float, default=1e-3,
                       help="Adam step size of the value network (default: %(default)s; sb3-contrib, "
                            "Spinning Up)")
    group.add_argument("--vf-epochs", type=positive_int, default=10,
                       help="passes over each batch fitting the value network (default: %(default)s; "
                            "sb3-contrib's n_critic_updates)")
    group.add_argument("--num-minibatches", type=positive_int, default=16,
                       help="minibatches per value epoch; 2048 steps / 16 = minibatch 128 as sb3-contrib "
                            "(default: %(default)s)")


def check_algorithm_args(args):
    """Cross-setting checks that argparse types cannot express."""
    batch_size = args.num_envs * args.num_steps
    if batch_size % args.num_minibatches != 0:
        raise UsageError(f"--num-minibatches {args.num_minibatches} does not divide the batch of "
                         f"{batch_size} steps (--num-envs x --num-steps)")
    if args.fvp_subsample > 1.0:
        raise UsageError(f"--fvp-subsample {args.fvp_subsample} is a fraction of the batch: at most 1")
    if args.backtrack_coef >= 1.0:
        raise UsageError(f"--backtrack-coef {args.backtrack_coef} must be below 1 to shrink the step")


# === shared: configuration ===
class UsageError(Exception):
    """Bad input from the user: reported as one line on stderr, never a traceback."""


def checked(convert, test, requirement):
    """An argparse type: convert the text, then insist on `test`, naming the
    requirement in the error instead of argparse's "invalid value"."""

    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not test(value):
            raise argparse.ArgumentTypeError(f"must be {requirement}, got {text!r}")
        return value

    return parse


positive_int = checked(int, lambda v: v > 0, "a positive integer")
positive_float = checked(float, lambda v: 0 < v < math.inf, "a positive number")
nonnegative_float = checked(float, lambda v: 0 <= v < math.inf, "a non-negative number")
unit_interval = checked(float, lambda v: 0 <= v <= 1, "in [0, 1]")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" to each flag's help unless the help already says it."""

    def _get_help_string(self, action):
        return action.help if "default" in action.help else super()._get_help_string(action)


class OneLineParser(argparse.ArgumentParser):
    """argparse prints the whole usage block on an error; one line is easier to read."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


# Settings a resumed run may change; every other one is read back from its config.json.
RESUME_OVERRIDES = {"total_timesteps", "device", "vector", "torch_threads", "tensorboard",
                    "checkpoint_every"}
# Settings that describe what to do now rather than how the run trains: never saved.
ACTION_SETTINGS = {"resume", "eval", "eval_episodes", "stochastic_eval", "run_dir"}


def build_parser():
    parser = OneLineParser(description=DESCRIPTION, formatter_class=HelpFormatter)
    group = parser.add_argument_group("experiment")
    group.add_argument("--env", default="CartPole-v1",
                       help="Gymnasium id; flat Box observations, Discrete or Box actions "
                            "(default: %(default)s; with --eval, the checkpoint's env)")
    group.add_argument("--seed", type=int, default=1, help="seed of Python, NumPy, torch and the envs")
    group.add_argument("--total-timesteps", type=positive_int, default=1_000_000,
                       help="environment steps in the whole run, rounded down to whole batches "
                            "(1M as in the PPO paper's MuJoCo runs)")
    group.add_argument("--num-envs", type=positive_int, default=1,
                       help="parallel environments (1 as in the PPO paper's MuJoCo runs)")
    group.add_argument("--num-steps", type=positive_int, default=2048,
                       help="steps per environment per batch: the horizon T (PPO paper Table 3)")
    group.add_argument("--gamma", type=unit_interval, default=0.99,
                       help="discount factor (PPO paper Table 3)")
    group.add_argument("--gae-lambda", type=unit_interval, default=0.95,
                       help="GAE lambda: 0 is one-step TD, 1 is Monte Carlo (PPO paper Table 3)")
    group.add_argument("--hidden-sizes", type=positive_int, nargs="+", default=[64, 64],
                       help="hidden layers of the policy and of the value network (PPO paper: 64, 64)")
    group.add_argument("--norm-obs", action=argparse.BooleanOptionalAction, default=True,
                       help="normalize observations by running mean/std (baselines VecNormalize)")
    group.add_argument("--norm-reward", action=argparse.BooleanOptionalAction, default=True,
                       help="divide rewards by the running std of the discounted return "
                            "(baselines VecNormalize)")
    group.add_argument("--obs-clip", type=positive_float, default=10.0,
                       help="clip normalized observations to +-this (baselines VecNormalize)")
    group.add_argument("--reward-clip", type=positive_float, default=10.0,
                       help="clip scaled rewards to +-this (baselines VecNormalize)")
    group = parser.add_argument_group("machine")
    group.add_argument("--vector", choices=["sync", "async"], default="sync",
                       help="step the envs in this process (sync) or one subprocess each (async)")
    group.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                       help="where the networks live; auto picks cuda when available")
    group.add_argument("--torch-threads", type=positive_int, default=1,
                       help="torch intra-op threads: for 64-unit networks more threads only contend")
    group = parser.add_argument_group("outputs")
    group.add_argument("--run-dir", default=None,
                       help="new directory for this run (default: runs/<env>__<algorithm>__<seed>__<time>)")
    group.add_argument("--checkpoint-every", type=positive_int, default=10,
                       help="save model.pt every this many updates (and always at the end and on Ctrl-C)")
    group.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=False,
                       help="also write TensorBoard scalars to the run directory (needs tensorboard)")
    group.add_argument("--capture-video", action=argparse.BooleanOptionalAction, default=False,
                       help="record MP4s of env 0 (training) or of every episode (--eval); needs moviepy")
    group = parser.add_argument_group("resume and evaluate")
    group.add_argument("--resume", metavar="RUN_DIR", default=None,
                       help="continue RUN_DIR from its model.pt up to --total-timesteps in all")
    group.add_argument("--eval", metavar="CHECKPOINT", default=None,
                       help="evaluate a saved model.pt instead of training")
    group.add_argument("--eval-episodes", type=positive_int, default=10, help="episodes for --eval")
    group.add_argument("--stochastic-eval", action=argparse.BooleanOptionalAction, default=False,
                       help="sample actions in --eval instead of taking the mean / most likely one")
    add_algorithm_args(parser)
    return parser


def parse_args(argv=None):
    """Parse the command line. With --resume, the run's saved settings are the defaults."""
    args = build_parser().parse_args(argv)
    if args.eval is not None:
        if args.resume is not None:
            raise UsageError("--eval and --resume exclude each other")
        if "env" not in typed_flags(argv):
            args.env = None  # evaluate on the environment the checkpoint was trained on
        return args
    if args.resume is not None:
        given = typed_flags(argv)
        saved = read_run_config(Path(args.resume))
        for name, value in given.items():
            if name in ACTION_SETTINGS or name in RESUME_OVERRIDES:
                continue
            if value != saved.get(name, value):
                raise UsageError(f"--{name.replace('_', '-')} cannot change when resuming; it was "
                                 f"{saved[name]!r} (changeable: {', '.join(sorted(RESUME_OVERRIDES))})")
        # Saved settings win, except the ones a resume may change and the user typed.
        merged = {**vars(args), **saved, **{k: v for k, v in given.items() if k in RESUME_OVERRIDES}}
        args = argparse.Namespace(**merged)
    if args.total_timesteps < args.num_envs * args.num_steps:
        raise UsageError(f"--total-timesteps {args.total_timesteps} is less than one batch of "
                         f"{args.num_envs * args.num_steps} steps (--num-envs x --num-steps)")
    check_algorithm_args(args)
    return args


def typed_flags(argv):
    """The settings the user actually typed. argparse fills in a default only
    where the namespace lacks the name, so a namespace pre-filled with a marker
    keeps the marker exactly where nothing was typed."""
    parser, unset = build_parser(), object()
    prefilled = argparse.Namespace(**dict.fromkeys(vars(parser.parse_args([])), unset))
    return {k: v for k, v in vars(parser.parse_args(argv, prefilled)).items() if v is not unset}


def read_run_config(run_dir):
    path = run_dir / "config.json"
    if not path.is_file():
        raise UsageError(f"cannot resume: {path} does not exist")
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot resume: {path} is unreadable ({error})") from None
    if config.get("algorithm") != ALGORITHM:
        raise UsageError(f"cannot resume: {run_dir} is a {config.get('algorithm')} run, "
                         f"this script is {ALGORITHM}")
    return config["settings"]
# === end shared ===


# === shared: seeding and device ===
def seed_everything(seed, envs):
    """Seed every source of randomness the run uses and return the first observation.

    Python and NumPy are seeded for any user code; torch drives action sampling
    and minibatch shuffling; each environment gets seed + index (Gymnasium's
    vector reset does that from one seed) and the action spaces, which
    `sample()` from, are seeded too. Gymnasium seeds an env only through reset.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    envs.action_space.seed(seed)
    obs, _ = envs.reset(seed=seed)
    return obs


def resolve_device(name):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but torch sees no CUDA device")
    return torch.device(name)
# === end shared ===


# === shared: distributed ===
# Synchronous data parallelism, as in DeepMind's distributed PPO (Heess et al.
# 2017, arXiv 1707.02286): `torchrun --nproc_per_node N X.py` starts N copies of
# this script; each steps its own environments and computes gradients on its own
# batch, and the copies average what they must so that every one takes exactly
# the same step. Started as `python X.py`, there is one copy and all of this does
# nothing. What is averaged where:
#   - parameters: broadcast from rank 0 at the start, identical from then on;
#   - PPO: gradients, before every optimizer step; the KL behind early stopping
#     and beta; TRPO: the policy gradient, every Fisher-vector product, the line
#     search's surrogate and KL, and the value function's gradients;
#   - normalizer statistics: merged from every rank's observations and returns;
#   - episodes: gathered to rank 0, the only rank that writes the run directory.
def world():
    """(rank, world size) of this copy; (0, 1) when not launched by torchrun."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def start_distributed(device):
    """Join torchrun's process group if torchrun started us; returns the device to use.
    NCCL when every rank has a GPU, gloo (CPU) otherwise."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def all_reduce_mean_(tensor):
    """Average `tensor` over the ranks, in place; every rank gets the same bits."""
    _, size = world()
    if size > 1:
        dist.all_reduce(tensor)
        tensor /= size
    return tensor


def average_gradients(params):
    """Average the gradients over the ranks in one all-reduce of their concatenation."""
    if world()[1] > 1:
        grads = [p.grad for p in params if p.grad is not None]
        flat = all_reduce_mean_(torch.cat([g.reshape(-1) for g in grads]))
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()


def broadcast_state(module):
    """Copy rank 0's parameters and buffers to every rank."""
    if world()[1] > 1:
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src=0)


def all_gather_rows(x):
    """Concatenate every rank's (B, ...) tensor into (world * B, ...), in rank order."""
    _, size = world()
    if size == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(size)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def gather_to_rank0(items):
    """Every rank's list, concatenated on rank 0 (other ranks get an empty list)."""
    rank, size = world()
    if size == 1:
        return items
    lists = [None] * size if rank == 0 else None
    dist.gather_object(items, lists, dst=0)
    return [item for part in lists for item in part] if rank == 0 else []


def any_rank(flag):
    """True on every rank if it is true on any: a decision all ranks must take together."""
    if world()[1] == 1:
        return flag
    value = torch.tensor(float(flag))
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def check_replicas(agent):
    """Raise unless every rank holds bit-identical parameters; returns the world size."""
    rank, size = world()
    if size > 1:
        flat = torch.cat([t.detach().reshape(-1).double().cpu() for t in agent.state_dict().values()])
        copies = all_gather_rows(flat.unsqueeze(0))
        if not bool((copies == copies[0]).all()):
            raise TrainingDiverged("the ranks' parameters differ: the replicas are out of sync")
    return size
# === end shared ===


# === shared: environments ===
def make_env(env_id, idx=0, video_dir=None):
    """Return a function that builds one environment (vector envs want builders).

    With `video_dir`, environment 0 renders frames and RecordVideo writes MP4s.
    """

    def build():
        if video_dir is not None and idx == 0:
            env = gym.make(env_id, render_mode="rgb_array")
            return gym.wrappers.RecordVideo(env, str(video_dir), disable_logger=True)
        return gym.make(env_id)

    return build


def ignore_sigint_then(build):
    """Async workers share the terminal's process group, so Ctrl-C reaches them too
    and would kill them mid-step; the main process alone decides how to stop."""

    def build_in_worker():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        return build()

    return build_in_worker


def make_vector_env(env_id, num_envs, vector, video_dir=None):
    """Vector env in SAME_STEP autoreset mode: why it matters for time limits.

    When an episode ends, we need the observation it ended in. If it ended by a
    time limit (truncation), the state was not terminal, and its value
    V(s_final) is part of the return; only a true termination has value 0.
    In Gymnasium >= 1.0 the default NEXT_STEP mode returns the final
    observation and resets on the *following* call, which wastes a step whose
    action is ignored. SAME_STEP resets at once, returns the new episode's
    first observation, and puts the final one in `infos["final_obs"]`, so every
    step in the batch is a real transition and the bootstrap value is at hand.
    """
    builders = [make_env(env_id, i, video_dir) for i in range(num_envs)]
    same_step = gym.vector.AutoresetMode.SAME_STEP
    if vector == "async":
        return gym.vector.AsyncVectorEnv([ignore_sigint_then(b) for b in builders],
                                         autoreset_mode=same_step)
    return gym.vector.SyncVectorEnv(builders, autoreset_mode=same_step)


def check_env(env_id):
    """Build the environment once to reject unknown ids and unsupported spaces early,
    before a run directory exists. Returns (observation space, action space)."""
    try:
        env = gym.make(env_id)
    except Exception as error:  # gymnasium raises many types: unknown id, bad module, missing extra
        raise UsageError(f"cannot make environment {env_id!r}: {error}") from None
    obs_space, action_space = env.observation_space, env.action_space
    env.close()
    if not (isinstance(obs_space, gym.spaces.Box) and len(obs_space.shape) == 1):
        raise UsageError(f"{env_id} has observation space {obs_space}; supported: a flat (1-D) Box")
    if not (isinstance(action_space, gym.spaces.Discrete)
            or (isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1)):
        raise UsageError(f"{env_id} has action space {action_space}; supported: Discrete or a 1-D Box")
    return obs_space, action_space


def check_rendering(env_id):
    """--capture-video needs frames: render one before a run directory exists, so a
    machine without a display or OpenGL gets a clear message instead of a crash."""
    require_module("moviepy", "--capture-video")
    try:
        with warnings.catch_warnings():  # windowing libraries warn on stderr before they fail
            warnings.simplefilter("ignore")
            env = gym.make(env_id, render_mode="rgb_array")
            env.reset(seed=0)
            env.render()
            env.close()
    except Exception as error:  # pygame, OpenGL and MuJoCo raise their own types
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UsageError(f"--capture-video: {env_id} cannot render here ({reason}); MuJoCo without "
                         f"a display needs MUJOCO_GL=egl or MUJOCO_GL=osmesa") from None


def describe_spaces(obs_space, action_space):
    """The sizes an Agent is built from, as plain numbers that a checkpoint can hold."""
    continuous = isinstance(action_space, gym.spaces.Box)
    return {"obs_dim": int(obs_space.shape[0]), "continuous": continuous,
            "action_dim": int(action_space.shape[0] if continuous else action_space.n)}
# === end shared ===


# === shared: agent ===
POLICY_HEAD_GAIN = 0.01  # near-zero logits / means: the first policy is near uniform or centred
VALUE_HEAD_GAIN = 1.0
HIDDEN_GAIN = math.sqrt(2)  # OpenAI baselines' scale for hidden layers, kept by every PPO that matches it
STD_EPSILON = 1e-8  # keeps the normalizer's division finite for a constant feature


class RunningMeanStd(nn.Module):
    """Running mean and variance of a stream of vectors, merged batch by batch
    with the parallel formula of Chan et al. (1979): merging the statistics of
    two halves gives those of the whole, up to rounding. Buffers, so
    state_dict saves them."""

    def __init__(self, shape):
        super().__init__()
        # float64: a million small updates would drift in float32.
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(shape, dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))

    @torch.no_grad()
    def update(self, x):  # x: (B, *shape)
        x = x.to(torch.float64)
        batch_count = x.shape[0]
        batch_mean, batch_var = x.mean(0), x.var(0, unbiased=False)
        total = self.count + batch_count
        delta = batch_mean - self.mean
        m2 = self.var * self.count + batch_var * batch_count + delta**2 * self.count * batch_count / total
        self.mean += delta * batch_count / total
        self.var.copy_(m2 / total)
        self.count.copy_(total)


def layer_init(layer, gain):
    """Orthogonal weights (Saxe et al. 2014) scaled by `gain`, zero bias
    (Huang et al. 2022, detail 2): better-conditioned first steps than PyTorch's
    default uniform init."""
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


def mlp(in_dim, hidden_sizes, out_dim, out_gain):
    layers, width = [], in_dim
    for size in hidden_sizes:
        layers += [layer_init(nn.Linear(width, size), HIDDEN_GAIN), nn.Tanh()]
        width = size
    layers.append(layer_init(nn.Linear(width, out_dim), out_gain))
    return nn.Sequential(*layers)


class Agent(nn.Module):
    """Separate policy and value MLPs, with the observation normalizer inside.

    Methods take *raw* observations (B, obs_dim): the normalizer's statistics are
    buffers of this module, so they are saved with the weights and a loaded
    agent sees observations exactly as it did in training. The statistics only
    change through `obs_rms.update`, which the training loop calls between
    updates, never while acting or learning.

    Policy: categorical over logits for Discrete actions; for Box actions a
    diagonal Gaussian whose log-std is a learned vector independent of the state
    (PPO paper section 6.1, after Duan et al. 2016).
    """

    def __init__(self, obs_dim, action_dim, continuous, hidden_sizes=(64, 64), norm_obs=True,
                 obs_clip=10.0):
        super().__init__()
        self.config = {"obs_dim": obs_dim, "action_dim": action_dim, "continuous": continuous,
                       "hidden_sizes": list(hidden_sizes), "norm_obs": norm_obs, "obs_clip": obs_clip}
        self.continuous, self.norm_obs, self.obs_clip = continuous, norm_obs, obs_clip
        self.obs_rms = RunningMeanStd((obs_dim,))
        self.critic = mlp(obs_dim, hidden_sizes, 1, VALUE_HEAD_GAIN)
        self.actor = mlp(obs_dim, hidden_sizes, action_dim, POLICY_HEAD_GAIN)
        if continuous:
            # std = 1 at the start: wide exploration over actions scaled to about [-1, 1].
            self.actor_logstd = nn.Parameter(torch.zeros(action_dim))

    def policy_parameters(self):
        return [p for name, p in self.named_parameters() if not name.startswith("critic.")]

    def value_parameters(self):
        return list(self.critic.parameters())

    def normalize(self, obs):  # (B, obs_dim) -> (B, obs_dim)
        if not self.norm_obs:
            return obs
        std = torch.sqrt(self.obs_rms.var + STD_EPSILON)
        # Clipping bounds what one outlier state can do to the first layer.
        return ((obs - self.obs_rms.mean) / std).clamp(-self.obs_clip, self.obs_clip).to(obs.dtype)

    def get_value(self, obs):  # (B, obs_dim) -> (B,)
        return self.value_from_normalized(self.normalize(obs))

    def value_from_normalized(self, x):  # (B, obs_dim) -> (B,)
        return self.critic(x).squeeze(-1)

    def distribution(self, obs):
        """pi(.|s) for a batch of raw observations (B, obs_dim)."""
        return self.policy_from_normalized(self.normalize(obs))

    def policy_from_normalized(self, x):
        # validate_args=False skips argument checks that cost more than these
        # tiny networks do; the inputs are ours and known to be valid.
        if self.continuous:
            mean = self.actor(x)  # (B, action_dim)
            std = self.actor_logstd.exp().expand_as(mean)
            # Independent sums log-probs and entropies over the action dimensions.
            return Independent(Normal(mean, std, validate_args=False), 1, validate_args=False)
        return Categorical(logits=self.actor(x), validate_args=False)

    def get_action_and_value(self, obs, action=None):
        """-> (action, log pi(action|s), entropy, V(s)); all (B,) except Box actions (B, action_dim)."""
        x = self.normalize(obs)
        dist = self.policy_from_normalized(x)
        if action is None:
            action = dist.sample()
        return action, dist.log_prob(action), dist.entropy(), self.value_from_normalized(x)

    @torch.no_grad()
    def sample_action(self, obs):
        """Draw a ~ pi(.|s) for acting, (B,) or (B, action_dim): a sample of the
        same distribution as distribution(obs).sample() gives (from other random
        numbers), without building a Distribution object, whose bookkeeping costs
        more than the network when it is paid at every environment step."""
        out = self.actor(self.normalize(obs))  # logits or means, (B, action_dim)
        if self.continuous:
            return out + self.actor_logstd.exp() * torch.randn_like(out)
        # Gumbel-max trick: argmax(logits + Gumbel noise) is an exact sample of
        # softmax(logits); Gumbel noise is -log(E) with E ~ Exponential(1). A few
        # cheap ops, where torch.multinomial costs more per call than the network.
        return (out - torch.empty_like(out).exponential_().log()).argmax(dim=-1)

    @torch.no_grad()
    def act(self, obs, deterministic=True):
        """Action for evaluation: the mean (Box) or the most likely action (Discrete)."""
        dist = self.distribution(obs)
        if not deterministic:
            return dist.sample()
        return dist.mean if self.continuous else dist.probs.argmax(-1)
# === end shared ===


# === shared: rollout ===
@dataclasses.dataclass
class Rollout:
    """One batch of experience: num_steps (T) steps of num_envs (N) environments."""

    obs: torch.Tensor  # (T, N, obs_dim) raw observations s_t
    actions: torch.Tensor  # (T, N) for Discrete, (T, N, action_dim) for Box; unclipped samples
    logprobs: torch.Tensor  # (T, N) log pi_old(a_t | s_t)
    values: torch.Tensor  # (T, N) V(s_t) under the value network that acted
    rewards: torch.Tensor  # (T, N) raw environment rewards r_t
    dones: torch.Tensor  # (T, N) 1.0 where the episode ended at step t, by termination or time limit
    bootstrap: torch.Tensor  # (T, N) gamma * V(s_final) where a time limit cut the episode, else 0

    @classmethod
    def empty(cls, num_steps, num_envs, spaces, device):
        def zeros(*trailing):
            return torch.zeros((num_steps, num_envs, *trailing), device=device)

        actions = zeros(spaces["action_dim"]) if spaces["continuous"] else zeros().long()
        return cls(obs=zeros(spaces["obs_dim"]), actions=actions, logprobs=zeros(), values=zeros(),
                   rewards=zeros(), dones=zeros(), bootstrap=zeros())


class EpisodeTracker:
    """Raw return and length of each environment's current episode: what the
    logs report, whatever reward scaling the learner sees."""

    def __init__(self, num_envs):
        self.returns = np.zeros(num_envs)
        self.lengths = np.zeros(num_envs, dtype=np.int64)

    def step(self, rewards, dones, global_step):
        """Add one vector step; return (global_step, return, length) of each episode that ended."""
        self.returns += rewards
        self.lengths += 1
        ended = [(global_step, float(self.returns[i]), int(self.lengths[i])) for i in np.flatnonzero(dones)]
        self.returns[dones] = 0.0
        self.lengths[dones] = 0
        return ended


@torch.no_grad()
def collect_rollout(envs, agent, buf, obs, tracker, global_step, gamma):
    """Fill `buf` with T steps of every env, starting from observations `obs` (N, obs_dim).

    Returns the observations to start the next rollout from and the list of
    episodes that ended, as (global_step, raw return, length).
    """
    num_steps, num_envs = buf.rewards.shape
    device = buf.obs.device
    action_space = envs.single_action_space
    continuous = isinstance(action_space, gym.spaces.Box)
    # Per-step data is staged in NumPy and copied to the buffer once at the end:
    # writing a NumPy row costs far less than a small torch copy, T times over.
    obs_np = np.empty(buf.obs.shape, dtype=np.float32)  # (T, N, obs_dim)
    rewards_np = np.empty((num_steps, num_envs), dtype=np.float32)
    dones_np = np.empty((num_steps, num_envs), dtype=np.float32)
    buf.bootstrap.zero_()
    finished = []
    for t in range(num_steps):
        obs_np[t] = obs
        obs_t = torch.from_numpy(obs_np[t]).to(device)  # (N, obs_dim); no copy on the CPU
        action = agent.sample_action(obs_t)
        buf.actions[t] = action
        env_action = action.cpu().numpy()
        if continuous:
            # Clip only what the env sees: the buffer keeps the unclipped sample, the
            # one the Gaussian policy actually drew, and its log-prob is computed from it.
            env_action = np.clip(env_action, action_space.low, action_space.high)
        obs, reward, terminated, truncated, infos = envs.step(env_action)
        done = terminated | truncated
        rewards_np[t], dones_np[t] = reward, done
        # A time limit stops the episode in a state that is not terminal: its value
        # V(s_final) belongs in the return (Pardo et al. 2018, "Time Limits in RL").
        cut = truncated & ~terminated
        if cut.any():
            final_obs = torch.as_tensor(np.stack(infos["final_obs"][cut]), dtype=torch.float32,
                                        device=device)  # (number cut, obs_dim)
            buf.bootstrap[t, torch.as_tensor(cut, device=device)] = gamma * agent.get_value(final_obs)
        finished += tracker.step(reward, done, global_step + (t + 1) * num_envs * world()[1])
    buf.obs.copy_(torch.from_numpy(obs_np))
    buf.rewards.copy_(torch.from_numpy(rewards_np))
    buf.dones.copy_(torch.from_numpy(dones_np))
    # Log-probs and values of the whole rollout in one batched pass: the networks
    # did not change during it, so these are the numbers each step would have
    # computed, without paying the per-call overhead of tiny networks T times.
    _, logprobs, _, values = agent.get_action_and_value(buf.obs.flatten(0, 1), buf.actions.flatten(0, 1))
    buf.logprobs.copy_(logprobs.view(num_steps, num_envs))  # (T * N,) -> (T, N)
    buf.values.copy_(values.view(num_steps, num_envs))
    return obs, finished
# === end shared ===


# === shared: advantages ===
class RewardScaler:
    """Divide rewards by the running std of the discounted return, then clip.

    Returns in the hundreds or thousands make value targets badly scaled;
    dividing by a running std keeps them near unit size (Engstrom et al. 2020,
    "Implementation Matters", reward scaling). The mean is not subtracted:
    shifting rewards would change what the optimal policy is when episode
    length depends on behaviour (a per-step alive bonus, say).
    """

    def __init__(self, num_envs, gamma, clip):
        self.gamma, self.clip = gamma, clip
        self.rms = RunningMeanStd(())
        self.discounted = torch.zeros(num_envs, dtype=torch.float64)  # running return of each env

    def update(self, rewards, dones):  # (T, N) each
        """Fold one rollout's rewards into the statistics."""
        rewards, dones = rewards.cpu().double().numpy(), dones.cpu().bool().numpy()
        discounted = self.discounted.numpy()  # shares memory: updated in place, (N,)
        returns = np.empty_like(rewards)  # (T, N); a NumPy loop, as in compute_gae
        for t in range(rewards.shape[0]):
            discounted *= self.gamma
            discounted += rewards[t]
            returns[t] = discounted
            discounted[dones[t]] = 0.0  # an episode ended: its successor starts from 0
        self.rms.update(all_gather_rows(torch.from_numpy(returns.reshape(-1))))  # every rank's returns

    def scale(self, rewards):
        std = torch.sqrt(self.rms.var + STD_EPSILON).to(rewards.dtype)
        return (rewards / std).clamp(-self.clip, self.clip)

    def state_dict(self):
        return self.rms.state_dict()

    def load_state_dict(self, state):
        self.rms.load_state_dict(state)


def compute_gae(rewards, values, dones, next_value, gamma, gae_lambda):
    """Generalized Advantage Estimation (GAE paper arXiv 1506.02438 section 3;
    PPO paper eqs. 11-12), computed backwards in one pass.

        delta_t = r_t + gamma * V(s_{t+1}) * (1 - done_t) - V(s_t)
        A_t     = delta_t + gamma * lambda * (1 - done_t) * A_{t+1}

    rewards, values, dones: (T, N); next_value: (N,) is V of the observation
    after the last step. done_t = 1 means the episode ended at step t, so
    s_{t+1} is the first state of a new episode: neither its value nor the
    recursion crosses that boundary. A time limit's bootstrap gamma * V(s_final)
    must already be in r_t. Returns (advantages, returns = advantages + values).
    """
    # The loop runs in NumPy: T small steps cost several times less there than as torch ops.
    r, v, d, v_last = (x.detach().cpu().numpy() for x in (rewards, values, dones, next_value))
    num_steps = r.shape[0]
    advantages = np.zeros_like(r)  # (T, N)
    last = np.zeros_like(v_last)  # A_{t+1}, (N,)
    for t in reversed(range(num_steps)):
        value_next = v_last if t == num_steps - 1 else v[t + 1]
        not_done = 1.0 - d[t]
        delta = r[t] + gamma * value_next * not_done - v[t]
        last = delta + gamma * gae_lambda * not_done * last
        advantages[t] = last
    advantages = torch.as_tensor(advantages, device=values.device)
    return advantages, advantages + values


@dataclasses.dataclass
class Batch:
    """A rollout flattened over (T, N) into B = T * N samples for the update."""

    obs: torch.Tensor  # (B, obs_dim)
    actions: torch.Tensor  # (B,) or (B, action_dim)
    logprobs: torch.Tensor  # (B,)
    values: torch.Tensor  # (B,)
    advantages: torch.Tensor  # (B,)
    returns: torch.Tensor  # (B,) the value targets

    @classmethod
    def from_rollout(cls, buf, advantages, returns):
        def flat(x):
            return x.reshape(-1, *x.shape[2:])

        return cls(obs=flat(buf.obs), actions=flat(buf.actions), logprobs=flat(buf.logprobs),
                   values=flat(buf.values), advantages=flat(advantages), returns=flat(returns))


def make_batch(buf, next_value, reward_scaler, gamma, gae_lambda):
    """Rollout -> flat batch with GAE advantages and value targets.

    The reward scaler first takes in this rollout's rewards, so the first batch
    of a run is already scaled. The time-limit bootstrap is added after scaling:
    it is gamma * V(s_final), and V is learned in scaled units.
    """
    rewards = buf.rewards
    if reward_scaler is not None:
        reward_scaler.update(buf.rewards, buf.dones)
        rewards = reward_scaler.scale(rewards)
    advantages, returns = compute_gae(rewards + buf.bootstrap, buf.values, buf.dones, next_value,
                                      gamma, gae_lambda)
    return Batch.from_rollout(buf, advantages, returns)


def explained_variance(predicted, target):
    """1 - Var[target - predicted] / Var[target]: 1 is perfect, 0 no better than a constant."""
    var_target = target.var()
    return float("nan") if var_target == 0 else float(1 - (target - predicted).var() / var_target)
# === end shared ===


# ==================================================================================
# The update: TRPO
# ==================================================================================
# Precision: everything here runs in float32, the networks' own dtype; no global
# float64 default. That suffices because every quantity is a mean over the batch
# of O(1) terms (advantages are normalized), F is damped so CG's system has
# eigenvalues >= --cg-damping, and CG runs a few dozen iterations at most. The one place
# that needs care is the surrogate improvement, a small difference of two large
# sums: see surrogate_gain.
ADAM_EPS = 1e-5  # ppo2's and sb3's value; PyTorch's 1e-8 lets tiny second moments make huge steps
ADVANTAGE_EPS = 1e-8  # keeps advantage normalization finite when all advantages are equal
CG_RESIDUAL_TOL = 1e-10  # CG stops once r^T r falls below this (baselines' and sb3-contrib's cg)
# The line search's acceptance rule (appendix C: "ensuring that we improve the
# nonlinear objective while satisfying the nonlinear constraint"):
KL_SLACK = 1.0  # accept only measured mean KL <= KL_SLACK * max_kl: the hard bound (baselines allows 1.5)
MIN_IMPROVEMENT = 0.0  # ... and only a surrogate gain above this: it must strictly improve


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
    grads = torch.autograd.grad(output, params, create_graph=create_graph, retain_graph=retain_graph,
                                allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, params)])


def surrogate_gain(logratio, advantages):
    """L(theta) - L(theta_old), where L(theta) = E[pi_theta(a|s) / pi_old(a|s) * A]
    is TRPO's surrogate (section 2), importance-sampled from the batch (section 5).

    Since the ratio is 1 at theta_old, the gain is E[(ratio - 1) * A]: the same
    gradient as L, and the improvement the line search checks, computed without
    subtracting two nearly equal means. expm1 gives ratio - 1 to full float32
    precision for the tiny log-ratios of a 0.01-KL step, where exp(x) - 1 rounds.
    """
    return (torch.expm1(logratio) * advantages).mean()


def mean_kl(old_dist, new_dist):
    """Mean over states of KL[pi_old(.|s) || pi_theta(.|s)]: TRPO's D_KL-bar (section 4),
    the practical stand-in for the maximum over states that its theory bounds."""
    return torch.distributions.kl_divergence(old_dist, new_dist).mean()


def fisher_vector_product(kl_grad, params, vector, damping):
    """(F + damping * I) v without forming F (P x P): TRPO appendix C.1.

    F is the Hessian of the mean KL[pi_old || pi_theta] at theta = theta_old,
    which equals the Fisher information matrix there (the KL's gradient is zero
    at its minimum, and its curvature is E[grad log pi grad log pi^T]).
    `kl_grad` is grad_theta of that KL as a flat (P,) vector built with
    create_graph=True, pi_old detached; differentiating kl_grad . v once more
    gives F v (Pearlmutter 1994), at about the cost of one more backward pass.
    The damping is not in the paper: it bounds F's smallest eigenvalue away
    from 0, so directions the batch says nothing about do not get huge steps.
    """
    return flat_grad(kl_grad @ vector, params, retain_graph=True) + damping * vector


def conjugate_gradient(Avp, b, iters, residual_tol):
    """Approximately solve A x = b for symmetric positive definite A, given only
    v -> A v (Hestenes and Stiefel 1952; Nocedal and Wright algorithm 5.2).

    x starts at 0: then r = b needs no product, and stopping early leaves x in
    the span of b, A b, A^2 b, ...: after one iteration x is the gradient
    itself, scaled, so few iterations give a partly natural gradient, never
    garbage. Stops after `iters` products, when r^T r <= residual_tol, or when
    the curvature p^T A p is not positive (NaN included): A is then not
    positive definite along p (too little damping, or a NaN in the batch), and
    x as it stands is returned.
    """
    x = torch.zeros_like(b)
    r = b.clone()  # residual b - A x
    p = b.clone()  # search direction, A-conjugate to the ones before
    rr = r @ r
    for _ in range(iters):
        if rr <= residual_tol:
            break
        Ap = Avp(p)
        curvature = p @ Ap
        if not curvature > 0:
            break
        alpha = rr / curvature
        x += alpha * p
        r -= alpha * Ap
        rr_new = r @ r
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


def backtracking_line_search(params, full_step, evaluate, max_kl, backtrack_coef, backtrack_iters):
    """Try theta_old + backtrack_coef^i * full_step for i = 0, 1, ...; keep the
    first that passes the nonlinear checks (TRPO appendix C: "we shrink beta
    exponentially until the objective improves", with the KL constraint as an
    infinite penalty).

    evaluate() -> (surrogate gain, mean KL) of the parameters as they are now.
    Returns (accepted, backtracks, gain, kl). When no step passes, the
    parameters are restored to theta_old bit for bit and (False, backtrack_iters,
    0.0, 0.0) is returned: the policy did not move.
    """
    theta_old = flat_params(params)
    fraction = 1.0
    for backtracks in range(backtrack_iters):
        set_flat_params(params, theta_old + fraction * full_step)
        gain, kl = evaluate()
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
    """Zero mean, unit std over the whole batch: the surrogate's gradient then does
    not depend on the reward scale. A single sample has no std and is left as is."""
    if advantages.numel() < 2:
        return advantages
    return (advantages - advantages.mean()) / (advantages.std() + ADVANTAGE_EPS)


def fit_value_function(agent, optimizer, batch, epochs, num_minibatches):
    """Regress V(s) on the GAE returns: `epochs` passes of minibatch Adam steps.
    `optimizer` holds only the critic, and V reads only the critic, so the policy
    cannot move here. Returns the mean loss over the steps."""
    batch_size = batch.obs.shape[0]
    minibatch_size = batch_size // num_minibatches
    total, steps = torch.zeros(()), 0
    for epoch in range(epochs):
        order = torch.randperm(batch_size, device=batch.obs.device)
        for start in range(0, batch_size, minibatch_size):
            mb = order[start:start + minibatch_size]
            v_loss = value_loss(agent.get_value(batch.obs[mb]), batch.returns[mb])
            optimizer.zero_grad(set_to_none=True)
            v_loss.backward()
            average_gradients(agent.value_parameters())  # the same value step on every rank
            optimizer.step()
            total += v_loss.detach().cpu()
            steps += 1
    return all_reduce_mean_(total).item() / steps


def make_optimizers(agent, args):
    """Adam for the value network only: the policy moves by the natural gradient step."""
    return {"value_adam": torch.optim.Adam(agent.value_parameters(), lr=args.vf_learning_rate, eps=ADAM_EPS)}


def initial_algorithm_state(args):
    """TRPO carries nothing from one update to the next: delta is fixed, the
    natural gradient is recomputed from each batch."""
    return {}


def update(agent, optimizers, state, batch, args, progress):
    """One trust-region step on the policy (TRPO appendix C), then the value fit.

    `progress` is unused: the step's size comes from --max-kl, not a schedule.
    Returns the diagnostics logged in progress.csv; booleans as 0/1.
    """
    params = agent.policy_parameters()
    theta_old = flat_params(params)  # (P,)
    advantages = normalize_advantages(batch.advantages) if args.norm_adv else batch.advantages  # (B,)
    with torch.no_grad():
        # pi_old, the policy that acted: the normalizer has not moved since the rollout.
        old_dist = agent.distribution(batch.obs)
        # From pi_old itself rather than batch.logprobs: then the log-ratio at
        # theta_old is exactly 0 however the rollout batched its forward passes.
        old_logprob = old_dist.log_prob(batch.actions)  # (B,)

    def evaluate():
        with torch.no_grad():
            dist = agent.distribution(batch.obs)
            gain = surrogate_gain(dist.log_prob(batch.actions) - old_logprob, advantages)
            # Averaged over ranks, so every rank accepts or rejects the same step.
            measured = all_reduce_mean_(torch.stack([gain, mean_kl(old_dist, dist)]))
            return measured[0].item(), measured[1].item()

    # g, the gradient of the surrogate L at theta_old: the right-hand side of A x = g (appendix C).
    logratio = agent.distribution(batch.obs).log_prob(batch.actions) - old_logprob  # (B,), all 0
    g = all_reduce_mean_(flat_grad(surrogate_gain(logratio, advantages), params))  # (P,), over all ranks' data

    # F v, the Fisher-vector product, on a random subsample of the states
    # (appendix C; the paper used 10% of the batch to save computation).
    fvp_obs, fvp_old = batch.obs, old_dist
    if args.fvp_subsample < 1.0:
        keep = torch.randperm(batch.obs.shape[0], device=batch.obs.device)
        fvp_obs = batch.obs[keep[:math.ceil(args.fvp_subsample * batch.obs.shape[0])]]  # (B', obs_dim)
        with torch.no_grad():
            fvp_old = agent.distribution(fvp_obs)
    kl_grad = flat_grad(mean_kl(fvp_old, agent.distribution(fvp_obs)), params, create_graph=True)  # (P,)

    def fvp(v):
        # Averaged over ranks: F is then the Fisher matrix of all ranks' states together.
        return all_reduce_mean_(fisher_vector_product(kl_grad, params, v, args.cg_damping))

    # s ~= F^-1 g, the natural gradient direction, by k CG iterations (appendix C; k = 10 in the
    # paper, 25 here: late in training 10 leave a quarter or more of the step's progress unused).
    s = conjugate_gradient(fvp, g, args.cg_iters, CG_RESIDUAL_TOL)  # (P,)
    Fs = fvp(s)  # one more product gives both s^T F s and CG's true residual
    sFs = (s @ Fs).item()
    g_norm = g.norm().item()
    cg_residual = (Fs - g).norm().item() / g_norm if g_norm > 0 else 0.0  # relative: ||F s - g|| / ||g||

    accepted, backtracks, gain, kl = False, 0, 0.0, 0.0
    if sFs > 0 and math.isfinite(sFs):
        # The maximal step beta * s, beta = sqrt(2 delta / s^T F s): where the
        # quadratic model of the KL, 1/2 beta^2 s^T F s, reaches delta (appendix C).
        full_step = math.sqrt(2.0 * args.max_kl / sFs) * s  # (P,)
        if args.line_search:
            accepted, backtracks, gain, kl = backtracking_line_search(
                params, full_step, evaluate, args.max_kl, args.backtrack_coef, args.backtrack_iters)
        else:
            # The natural policy gradient step, unchecked (TRPO section 7, after Kakade 2002).
            set_flat_params(params, theta_old + full_step)
            accepted, (gain, kl) = True, evaluate()
    if not accepted:
        print(f"[{ALGORITHM}] policy step rejected after {backtracks} backtracks (s^T F s = {sFs:.3g}); "
              f"the policy is unchanged", flush=True)
    step = flat_params(params) - theta_old  # (P,) zero when rejected
    expected = (g @ step).item()  # the linear model's gain, to compare with the measured one

    v_loss = fit_value_function(agent, optimizers["value_adam"], batch, args.vf_epochs, args.num_minibatches)
    return {"kl": kl, "surrogate_improvement": gain, "expected_improvement": expected, "backtracks": backtracks,
            "step_accepted": int(accepted), "step_norm": step.norm().item(), "cg_residual": cg_residual,
            "value_loss": v_loss, "entropy": all_reduce_mean_(old_dist.entropy().mean()).item()}


# === shared: logging and checkpoints ===
CHECKPOINT_FORMAT = 1
RECENT_EPISODES = 20  # episodes averaged in the console line and progress.csv (CartPole's solved window)


def default_run_dir(args):
    env_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", args.env)  # ids like "module:Env-v0" or "ALE/Pong-v5"
    return Path("runs") / f"{env_name}__{ALGORITHM}__{args.seed}__{time.strftime('%Y%m%d-%H%M%S')}"


def create_run_dir(path):
    """A new run never writes into a directory that already holds something."""
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise UsageError(f"run directory {path} already exists; pick another --run-dir "
                         f"or continue it with --resume {path}")
    path.mkdir(parents=True, exist_ok=True)


def package_versions():
    versions = {"python": platform.python_version()}
    for package in ("torch", "gymnasium", "numpy", "mujoco"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def saved_settings(args):
    return {k: v for k, v in vars(args).items() if k not in ACTION_SETTINGS}


def write_config(run_dir, args):
    config = {"algorithm": ALGORITHM, "settings": saved_settings(args), "versions": package_versions()}
    atomic_write(run_dir / "config.json", lambda f: f.write(json.dumps(config, indent=2).encode()))


def atomic_write(path, write):
    """Write to a temporary file and rename it over `path`: a crash mid-write
    leaves the old file whole, never a truncated one."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
    os.replace(tmp, path)


def rng_state():
    """Random generator states as plain types and tensors, so that loading them
    with weights_only=True is allowed."""
    np_state = np.random.get_state()
    return {"python": random.getstate(), "torch": torch.get_rng_state(),
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]]}


def set_rng_state(state):
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    name, key, *rest = state["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), *rest))


def save_checkpoint(path, agent, optimizers, algorithm_state, reward_scaler, args, global_step,
                    updates, elapsed):
    """Everything needed to act (agent with its normalizer) and to resume."""
    payload = {
        "format": CHECKPOINT_FORMAT, "algorithm": ALGORITHM, "settings": saved_settings(args),
        "agent_config": agent.config, "agent": agent.state_dict(),
        "optimizers": {name: opt.state_dict() for name, opt in optimizers.items()},
        "algorithm_state": dict(algorithm_state),
        "reward_scaler": None if reward_scaler is None else reward_scaler.state_dict(),
        "global_step": global_step, "updates": updates, "elapsed": elapsed, "rng": rng_state(),
    }
    atomic_write(path, lambda f: torch.save(payload, f))


def load_checkpoint(path, device="cpu"):
    """Read a checkpoint. weights_only=True: unpickling can build tensors and
    plain containers but never run code, so opening a checkpoint is safe."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # a corrupt file fails in zipfile, pickle or torch, with many types
        raise UsageError(f"checkpoint {path} is unreadable: corrupt, or not a weights-only torch file "
                         f"({type(error).__name__})") from None
    if not (isinstance(checkpoint, dict) and checkpoint.get("format") == CHECKPOINT_FORMAT):
        raise UsageError(f"checkpoint {path} is not a model.pt written by these scripts")
    return checkpoint


def load_agent(checkpoint_path, device="cpu"):
    """Rebuild the Agent, normalizer statistics included, from a model.pt."""
    checkpoint = load_checkpoint(checkpoint_path, device)
    agent = Agent(**checkpoint["agent_config"]).to(device)
    agent.load_state_dict(checkpoint["agent"])
    return agent.eval()


def check_agent_fits(agent_config, spaces, env_id):
    expected = {k: agent_config[k] for k in ("obs_dim", "action_dim", "continuous")}
    if expected != spaces:
        raise UsageError(f"the checkpoint's agent expects {expected}, but {env_id} has {spaces}")


def require_module(module, flag):
    """Optional extras are imported only when their flag asks for them."""
    if importlib.util.find_spec(module) is None:
        raise UsageError(f"{flag} needs the '{module}' package: pip install {module}")


def drop_rows_after(csv_path, step):
    """Remove the rows logged after `step`, the checkpoint a run resumes from.
    They exist only if the run was killed (not stopped with Ctrl-C) after its
    last checkpoint; the resumed run logs those steps anew, so keeping them
    would count them twice."""
    if not csv_path.exists():
        return
    with open(csv_path, newline="") as f:
        header, *rows = list(csv.reader(f))
    keep = [row for row in rows if int(row[header.index("global_step")]) <= step]
    if len(keep) < len(rows):
        print(f"[{ALGORITHM}] {csv_path.name}: dropped {len(rows) - len(keep)} rows logged after the "
              f"checkpoint at step {step:,}", flush=True)
        text = io.StringIO()
        csv.writer(text).writerows([header, *keep])
        atomic_write(csv_path, lambda f: f.write(text.getvalue().encode()))


class RunLogger:
    """progress.csv (one row per update), episodes.csv (one row per finished
    episode, raw returns), optional TensorBoard, and one console line per update.
    Files are opened for appending, so a resumed run continues them."""

    def __init__(self, run_dir, total_timesteps, tensorboard=False, resume_step=None):
        self.total_timesteps = total_timesteps
        episodes_path, self.progress_path = run_dir / "episodes.csv", run_dir / "progress.csv"
        if resume_step is not None:
            for path in (episodes_path, self.progress_path):
                drop_rows_after(path, resume_step)
        self.recent = deque(maxlen=RECENT_EPISODES)
        self.episode_count = 0
        if episodes_path.exists():  # resuming: carry the recent returns and the count on
            with open(episodes_path, newline="") as f:
                for row in csv.DictReader(f):
                    self.recent.append((float(row["return"]), int(row["length"])))
                    self.episode_count += 1
        new_file = not episodes_path.exists()
        self.episodes_file = open(episodes_path, "a", newline="")
        self.episodes_writer = csv.writer(self.episodes_file)
        if new_file:
            self.episodes_writer.writerow(["global_step", "return", "length"])
        self.progress_file, self.progress_writer = None, None
        self.tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # optional: only with --tensorboard
            self.tb = SummaryWriter(str(run_dir))

    def episodes(self, finished):
        for global_step, ret, length in finished:
            self.episodes_writer.writerow([global_step, ret, length])
            self.recent.append((ret, length))
            if self.tb is not None:
                self.tb.add_scalar("episode/return", ret, global_step)
        self.episode_count += len(finished)
        self.episodes_file.flush()

    def progress(self, global_step, elapsed, sps, stats):
        returns = [r for r, _ in self.recent]
        row = {"global_step": global_step, "time": round(elapsed, 3), "sps": round(sps, 1),
               "episodes": self.episode_count,
               "return_mean": np.mean(returns) if returns else float("nan"),
               "length_mean": np.mean([n for _, n in self.recent]) if returns else float("nan"), **stats}
        if self.progress_writer is None:
            new_file = not self.progress_path.exists()
            self.progress_file = open(self.progress_path, "a", newline="")
            self.progress_writer = csv.DictWriter(self.progress_file, fieldnames=list(row))
            if new_file:
                self.progress_writer.writeheader()
        self.progress_writer.writerow(row)
        self.progress_file.flush()
        if self.tb is not None:
            for key, value in row.items():
                if key != "global_step":
                    self.tb.add_scalar(f"progress/{key}", value, global_step)
        eta = (self.total_timesteps - global_step) / max(sps, 1e-9)
        print(f"[{ALGORITHM}] step {global_step:,}/{self.total_timesteps:,} | return {row['return_mean']:.1f}"
              f" | length {row['length_mean']:.0f} | {sps:,.0f} SPS | ETA {time.strftime('%H:%M:%S', time.gmtime(eta))}",
              flush=True)
        return row

    def close(self):
        for f in (self.episodes_file, self.progress_file):
            if f is not None:
                f.close()
        if self.tb is not None:
            self.tb.close()
# === end shared ===


# === shared: evaluation ===
@torch.no_grad()
def evaluate(agent, env_id, episodes, seed, device="cpu", deterministic=True, video_dir=None):
    """Run `episodes` whole episodes and return their raw returns.

    Deterministic by default (mean action / most likely action): evaluation
    measures what the policy has learned, not its exploration noise. Episode i
    is reset with seed + i, so the same call gives the same returns.
    """
    env = make_env(env_id, 0, video_dir)()
    returns = []
    try:
        for i in range(episodes):
            obs, _ = env.reset(seed=seed + i)
            total, done = 0.0, False
            while not done:
                obs_t = torch.as_tensor(obs, dtype=torch.float32, device=device).unsqueeze(0)  # (1, obs_dim)
                action = agent.act(obs_t, deterministic)[0].cpu().numpy()
                if isinstance(env.action_space, gym.spaces.Box):
                    action = np.clip(action, env.action_space.low, env.action_space.high)
                obs, reward, terminated, truncated, _ = env.step(action)
                total += float(reward)
                done = terminated or truncated
            returns.append(total)
    finally:
        env.close()
    return returns


def run_evaluation(args):
    device = resolve_device(args.device)
    checkpoint = load_checkpoint(args.eval, device)
    env_id = args.env or checkpoint["settings"]["env"]
    spaces = describe_spaces(*check_env(env_id))
    agent = load_agent(args.eval, device)
    check_agent_fits(agent.config, spaces, env_id)
    video_dir = None
    if args.capture_video:
        check_rendering(env_id)
        video_dir = Path(args.eval).parent / f"eval-videos-{time.strftime('%Y%m%d-%H%M%S')}"
    returns = evaluate(agent, env_id, args.eval_episodes, args.seed, device,
                       deterministic=not args.stochastic_eval, video_dir=video_dir)
    print(f"{env_id}: {len(returns)} episodes, return {np.mean(returns):.2f} +- {np.std(returns):.2f}"
          + (f" (videos in {video_dir})" if video_dir else ""))
    return returns
# === end shared ===


# === shared: training loop and main ===
class TrainingDiverged(Exception):
    """A loss or statistic became NaN or infinite."""


class StopOnSigint:
    """The first Ctrl-C asks the loop to stop after the current update, so the
    checkpoint it writes is consistent; a second one stops at once."""

    def __init__(self):
        self.requested = False

    def __enter__(self):
        try:
            self.previous = signal.signal(signal.SIGINT, self.handle)
        except ValueError:  # not the main thread: leave Ctrl-C alone
            self.previous = None
        return self

    def handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(f"[{ALGORITHM}] Ctrl-C: saving a checkpoint after this update (again to quit now)",
              flush=True)

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def open_run(args, device, rank=0):
    """Check everything a run needs before touching the disk; then create (or,
    with --resume, reopen) the run directory, on rank 0 only: the other ranks of
    a distributed run write nothing. Returns (run_dir, checkpoint or None)."""
    if args.capture_video and rank == 0:
        check_rendering(args.env)
    if args.tensorboard:
        require_module("tensorboard", "--tensorboard")
    if args.resume is None:
        run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(args)
        if rank == 0:
            create_run_dir(run_dir)
        checkpoint = None
    else:
        run_dir = Path(args.resume)
        checkpoint = load_checkpoint(run_dir / "model.pt", device)
        if checkpoint["global_step"] + args.num_envs * args.num_steps > args.total_timesteps:
            raise UsageError(f"{run_dir} is already at step {checkpoint['global_step']:,}; "
                             f"pass a larger --total-timesteps to continue it")
    if rank == 0:
        write_config(run_dir, args)
    return run_dir, checkpoint


def restore(checkpoint, agent, optimizers, algorithm_state, reward_scaler):
    agent.load_state_dict(checkpoint["agent"])
    for name, optimizer in optimizers.items():
        optimizer.load_state_dict(checkpoint["optimizers"][name])
    algorithm_state.update(checkpoint["algorithm_state"])
    if reward_scaler is not None:
        reward_scaler.load_state_dict(checkpoint["reward_scaler"])
    set_rng_state(checkpoint["rng"])


def train(args):
    """Train as `args` says; returns a summary dict. Raises UsageError on bad input."""
    spaces = describe_spaces(*check_env(args.env))
    device = start_distributed(resolve_device(args.device))
    rank, world_size = world()
    run_dir, checkpoint = open_run(args, device, rank)
    torch.set_num_threads(args.torch_threads)  # process-wide; chosen on purpose, see --torch-threads
    global_step, updates, elapsed_before = ((checkpoint["global_step"], checkpoint["updates"], checkpoint["elapsed"])
                                            if checkpoint else (0, 0, 0.0))
    envs = make_vector_env(args.env, args.num_envs, args.vector,
                           run_dir / "videos" if args.capture_video and rank == 0 else None)
    logger = None
    try:
        # Seed before the networks are built: their initial weights are random too.
        # A resumed run starts new episodes, seeded by its step so they differ from
        # the ones already played. Each rank's environments get their own seeds.
        seed = args.seed + global_step + rank * args.num_envs
        obs = seed_everything(seed, envs)
        agent = Agent(spaces["obs_dim"], spaces["action_dim"], spaces["continuous"], args.hidden_sizes,
                      args.norm_obs, args.obs_clip).to(device)
        optimizers = make_optimizers(agent, args)
        algorithm_state = initial_algorithm_state(args)
        reward_scaler = RewardScaler(args.num_envs, args.gamma, args.reward_clip) if args.norm_reward else None
        if checkpoint is not None:
            check_agent_fits(checkpoint["agent_config"], spaces, args.env)
            restore(checkpoint, agent, optimizers, algorithm_state, reward_scaler)
            if world_size > 1:
                torch.manual_seed(seed)  # the checkpoint holds rank 0's generator: give each rank its own
        broadcast_state(agent)  # every rank starts from rank 0's weights
        if rank == 0:
            logger = RunLogger(run_dir, args.total_timesteps, args.tensorboard,
                               resume_step=global_step if checkpoint else None)
        batch_size = args.num_envs * args.num_steps * world_size  # all ranks together
        buf = Rollout.empty(args.num_steps, args.num_envs, spaces, device)
        tracker = EpisodeTracker(args.num_envs)
        checkpoint_path = run_dir / "model.pt"
        start, start_step = time.time(), global_step

        def save():
            if rank == 0:
                save_checkpoint(checkpoint_path, agent, optimizers, algorithm_state, reward_scaler, args,
                                global_step, updates, elapsed_before + time.time() - start)

        stopped = False
        with StopOnSigint() as stop:
            while global_step + batch_size <= args.total_timesteps:
                # Ranks stop together: a Ctrl-C seen by any of them stops all after this update.
                stopped = any_rank(stop.requested)
                if stopped:
                    break
                progress = global_step / args.total_timesteps
                obs, finished = collect_rollout(envs, agent, buf, obs, tracker, global_step, args.gamma)
                global_step += batch_size
                finished = gather_to_rank0(finished)
                with torch.no_grad():
                    next_value = agent.get_value(torch.as_tensor(obs, dtype=torch.float32, device=device))
                batch = make_batch(buf, next_value, reward_scaler, args.gamma, args.gae_lambda)
                stats = update(agent, optimizers, algorithm_state, batch, args, progress)
                stats["explained_variance"] = explained_variance(batch.values, batch.returns)
                if not all(math.isfinite(v) for k, v in stats.items() if k != "explained_variance"):
                    kept = (f"the last good checkpoint is {checkpoint_path}" if checkpoint_path.exists()
                            else "no checkpoint had been written yet")
                    raise TrainingDiverged(f"non-finite loss at step {global_step:,} ({stats}); {kept}")
                if args.norm_obs:
                    # Only now, after the update: the policy that acted and the one the
                    # update started from saw observations normalized the same way.
                    # Every rank merges every rank's observations, so all normalize alike.
                    agent.obs_rms.update(all_gather_rows(batch.obs))
                updates += 1
                if logger is not None:
                    logger.episodes(finished)
                    now = time.time()
                    logger.progress(global_step, elapsed_before + now - start,
                                    (global_step - start_step) / (now - start), stats)
                if updates % args.checkpoint_every == 0:
                    save()
        if check_replicas(agent) > 1 and rank == 0:
            print(f"[{ALGORITHM}] parameters identical on all {world_size} ranks", flush=True)
        save()
        if stopped and rank == 0:
            print(f"[{ALGORITHM}] stopped at step {global_step:,}; continue with: "
                  f"python {Path(sys.argv[0]).name} --resume {run_dir}", flush=True)
    finally:
        envs.close()
        if logger is not None:
            logger.close()
        if world_size > 1:
            dist.barrier()  # leave together: a rank tearing down while another still talks can abort
            dist.destroy_process_group()
    returns = [r for r, _ in logger.recent] if logger is not None else []
    return {"run_dir": str(run_dir), "global_step": global_step, "updates": updates,
            "episodes": logger.episode_count if logger is not None else 0,
            "interrupted": stopped,
            "recent_return_mean": float(np.mean(returns)) if returns else float("nan")}


def main(argv=None):
    prog = Path(sys.argv[0]).name
    try:
        args = parse_args(argv)
        if args.eval is not None:
            run_evaluation(args)
            return 0
        summary = train(args)
    except UsageError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    except TrainingDiverged as error:
        print(f"{prog}: training diverged: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; the last periodic checkpoint is kept", file=sys.stderr)
        return 130
    return 130 if summary["interrupted"] else 0


if __name__ == "__main__":
    status = main()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # A torchrun worker leaves without Python's shutdown: gloo's threads, torn
        # down in an arbitrary order at interpreter exit, abort the process now and
        # then ("terminate called without an active exception"), failing a run that
        # finished. Everything is saved and flushed by now.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)
# === end shared ===
