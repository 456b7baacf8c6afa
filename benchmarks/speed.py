"""Training speed of the scripts, against the raw speed of their environments and against SB3 PPO.

    python benchmarks/speed.py                                   # everything (about 15 minutes)
    python benchmarks/speed.py --scripts ppo_clip trpo --no-scaling --sb3-python /path/to/sb3venv/bin/python
    python benchmarks/speed.py --envs CartPole-v1 Hopper-v5 --no-scaling --rounds 3 \
        --sb3-python /path/to/venv/bin/python --cleanrl-git /path/to/cleanrl/git/dir

For each script and environment, one after the other (never two measurements at once):
  (a) training steps per second with the script's default settings, as the
      script itself measures it (progress.csv's `sps`: steps since the training
      loop started over the time since then, so imports and set-up do not count);
  (b) the raw throughput of the same vector environment (the script's own
      make_vector_env) stepping pre-drawn random actions, with nothing else to do;
  and the ratio (a)/(b): the share of time left to the environment. Absolute
  numbers on a shared machine are noisy; ratios measured minutes apart much less.

SB3: Stable-Baselines3 PPO with the same hyperparameters as ppo_clip.py's
defaults (n_steps 2048, batch 64, 10 epochs, lr 3e-4, gamma 0.99, gae_lambda
0.95, clip 0.2, ent 0, 1 env, MlpPolicy 64-64 tanh, VecNormalize on observations
and rewards, device cpu, torch threads 1) runs in a subprocess of the interpreter
given by --sb3-python, so SB3 can live in a separate virtual environment; its
SPS is steps over the time of model.learn(). If that interpreter cannot import
stable_baselines3, the comparison is skipped and the output says so.

CleanRL (--cleanrl-git, CartPole-v1 only): CleanRL's ppo.py at its own defaults (4 envs x
128 steps, 4 epochs of 4 minibatches, lr 2.5e-4 annealed, ent 0.01, clipped value loss, no
normalization) against ppo_clip.py with the same settings, each for --cleanrl-steps steps, in a
subprocess with one torch thread (OMP_NUM_THREADS=1, as --torch-threads 1). Both are timed as
whole processes (imports and set-up included: steps over wall time), and each's own in-loop SPS
is shown too (CleanRL prints its "SPS:", ours is progress.csv's). CleanRL's ppo.py is read from
the git directory that the search tool's `fetch github:vwxyzjn/cleanrl` returns and runs in
--cleanrl-python, a venv with gymnasium 0.29, tyro and tensorboard (the one
../shared/anchors/cleanrl_ppo_atari.sh builds).

--rounds repeats the whole order (per env: raw env, each script, SB3, then the CleanRL pair),
so every side is measured between the others, alternating; the tables show the median of the
rounds and the ratios are of medians.

Scaling: training and raw SPS for --num-envs 1/2/4/8. The batch stays at 2048 steps (--num-steps 2048/N), so the update costs
the same and only the rollout changes.
"""

import argparse
import csv
import importlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


REPO = Path(__file__).resolve().parent.parent
SCRIPTS = ["ppo_clip", "ppo_penalty", "trpo"]
BATCH = 2048  # the scripts' default batch: 1 env x horizon 2048
ACTION_POOL = 1024  # random actions drawn before the raw timing, then cycled
HOPPER_GOAL = 0.5  # training SPS >= 50% of raw single-env SPS on Hopper-v5 (issue 5)
SB3_GOAL = 2.0  # training SPS >= 2x SB3 PPO's on CartPole-v1 (issue 5)
CLEANRL_GOAL = 2.0  # whole-process SPS >= 2x CleanRL ppo.py's, its settings, CartPole-v1 (issue 32)
# ppo_clip.py at CleanRL ppo.py's defaults (its Args class), for a like-for-like pair
CLEANRL_FLAGS = ["--num-envs", "4", "--num-steps", "128", "--num-minibatches", "4", "--update-epochs", "4",
                 "--learning-rate", "2.5e-4", "--anneal-lr", "--ent-coef", "0.01", "--clip-vloss",
                 "--no-norm-obs", "--no-norm-reward"]
CLEANRL_BATCH = 4 * 128

# Runs in the --sb3-python interpreter: argv = env id, steps. Prints "SB3_SPS <value>".
SB3_CODE = """
import sys, time
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize
env_id, steps = sys.argv[1], int(sys.argv[2])
torch.set_num_threads(1)
venv = VecNormalize(make_vec_env(env_id, n_envs=1, seed=1), norm_obs=True, norm_reward=True, gamma=0.99)
model = PPO("MlpPolicy", venv, n_steps=2048, batch_size=64, n_epochs=10, learning_rate=3e-4, gamma=0.99,
            gae_lambda=0.95, clip_range=0.2, ent_coef=0.0, seed=1, device="cpu", verbose=0,
            policy_kwargs=dict(net_arch=dict(pi=[64, 64], vf=[64, 64]), activation_fn=torch.nn.Tanh))
start = time.perf_counter()
model.learn(total_timesteps=steps)
print(f"SB3_SPS {model.num_timesteps / (time.perf_counter() - start):.1f}")
"""


class Failed(Exception):
    """A measurement that could not be made; the message says why, in one line."""


# ----------------------------------------------------------------------------------
# The three measurements
# ----------------------------------------------------------------------------------
def train_sps(python, script, env, steps, extra, workdir):
    """Train `script` for `steps` steps in a fresh run directory; its own SPS."""
    return train_process_sps(python, script, env, steps, extra, workdir)[1]


def train_process_sps(python, script, env, steps, extra, workdir):
    """Train `script` for `steps` steps in a fresh run directory: (steps over the process's wall
    time, its own SPS in the training loop)."""
    run_dir = Path(tempfile.mkdtemp(dir=workdir)) / "run"
    cmd = [python, str(REPO / f"{script}.py"), "--env", env, "--total-timesteps", str(steps),
           "--run-dir", str(run_dir), *extra]
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines() or ["no output"]
        raise Failed(f"{script} exited with {result.returncode}: {lines[-1]}")
    with open(run_dir / "progress.csv", newline="") as f:
        last = list(csv.DictReader(f))[-1]  # its sps: over the whole training loop
    return int(last["global_step"]) / wall, float(last["sps"])


def cleanrl_ppo_sps(python, git_dir, env, steps, workdir):
    """CleanRL ppo.py at its defaults: (steps over the process's wall time, its own last "SPS:")."""
    source = Path(workdir) / "cleanrl_ppo.py"
    if not source.exists():
        shown = subprocess.run(["git", "--git-dir", str(git_dir), "show", "HEAD:cleanrl/ppo.py"],
                               capture_output=True, text=True)
        if shown.returncode != 0:
            raise Failed(f"cannot read cleanrl/ppo.py from {git_dir}: {shown.stderr.strip()}")
        source.write_text(shown.stdout)
    cmd = [python, str(source), "--seed", "1", "--env-id", env, "--total-timesteps", str(steps)]
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - start
    found = re.findall(r"SPS: (\d+)", result.stdout)
    if result.returncode != 0 or not found:
        lines = (result.stderr or result.stdout).strip().splitlines() or ["no output"]
        raise Failed(f"CleanRL ppo.py exited with {result.returncode}: {lines[-1]}")
    # CleanRL runs whole batches of 4 x 128: the steps it took, for the whole-process rate
    return (steps // CLEANRL_BATCH * CLEANRL_BATCH / wall, float(found[-1]))


def raw_sps(make_vector_env, env, num_envs, steps):
    """Environment steps per second of the vector env alone, on random actions drawn in advance."""
    try:
        envs = make_vector_env(env, num_envs)
    except Exception as error:  # gymnasium raises many types: unknown id, missing extra, ...
        raise Failed(f"cannot make {env}: {error}") from None
    try:
        envs.action_space.seed(1)
        envs.reset(seed=1)
        actions = [envs.action_space.sample() for _ in range(ACTION_POOL)]  # each (num_envs, ...)
        vector_steps = max(steps // num_envs, 1)
        start = time.perf_counter()
        for i in range(vector_steps):
            envs.step(actions[i % ACTION_POOL])
        return vector_steps * num_envs / (time.perf_counter() - start)
    finally:
        envs.close()


def sb3_available(python):
    """None if `python` can import stable_baselines3, else why not."""
    try:
        result = subprocess.run([python, "-c", "import stable_baselines3"], capture_output=True, text=True)
    except OSError as error:
        return f"cannot run {python}: {error}"
    return None if result.returncode == 0 else f"{python} cannot import stable_baselines3"


def sb3_sps(python, env, steps):
    result = subprocess.run([python, "-c", SB3_CODE, env, str(steps)], capture_output=True, text=True)
    for line in result.stdout.splitlines():
        if line.startswith("SB3_SPS "):
            return float(line.split()[1])
    lines = result.stderr.strip().splitlines() or ["no output"]
    raise Failed(f"SB3 PPO exited with {result.returncode}: {lines[-1]}")


# ----------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------
def positive_int(text):
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


class OneLineParser(argparse.ArgumentParser):
    """Bad input gets one line on stderr, not argparse's usage block."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser():
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scripts", nargs="+", choices=SCRIPTS, default=SCRIPTS, metavar="SCRIPT",
                        help=f"scripts to measure, from: {' '.join(SCRIPTS)} (default: all)")
    parser.add_argument("--envs", nargs="+", default=["CartPole-v1", "Hopper-v5"], metavar="ENV",
                        help="Gymnasium ids (default: %(default)s)")
    parser.add_argument("--steps", type=positive_int, default=5 * BATCH,
                        help=f"environment steps per measurement, at least one batch of {BATCH} "
                             "(default: %(default)s)")
    parser.add_argument("--no-scaling", action="store_true",
                        help="skip the --num-envs scaling table (default: measure it)")
    parser.add_argument("--num-envs-list", nargs="+", type=positive_int, default=[1, 2, 4, 8], metavar="N",
                        help=f"--num-envs values of the scaling table, each dividing {BATCH} "
                             "(default: %(default)s)")
    parser.add_argument("--python", default=sys.executable,
                        help="interpreter that runs the scripts (default: this one, %(default)s)")
    parser.add_argument("--sb3-python", default=sys.executable,
                        help="interpreter that runs SB3 PPO, e.g. a separate venv with stable-baselines3 "
                             "(default: this one, %(default)s)")
    parser.add_argument("--no-sb3", action="store_true", help="skip the SB3 comparison (default: run it)")
    parser.add_argument("--rounds", type=positive_int, default=1,
                        help="times the whole order runs, alternating the sides; medians (default: %(default)s)")
    parser.add_argument("--cleanrl-git", type=Path,
                        help="CleanRL's git directory: adds the CleanRL ppo.py pair on CartPole-v1 "
                             "(default: %(default)s, skipped)")
    parser.add_argument("--cleanrl-python", help="interpreter for CleanRL ppo.py, with gymnasium 0.29, tyro and "
                                                 "tensorboard (default: --sb3-python's)")
    parser.add_argument("--cleanrl-steps", type=positive_int, default=500_000 // CLEANRL_BATCH * CLEANRL_BATCH,
                        help=f"steps of each side of the CleanRL pair, whole batches of {CLEANRL_BATCH} "
                             "(default: %(default)s, what CleanRL's default 500,000 runs)")
    return parser


def ratio_text(ours, theirs, percent):
    if ours is None or theirs is None:
        return "n/a"
    return f"{ours / theirs:.0%}" if percent else f"{ours / theirs:.2f}x"


def num(x):
    return "failed" if x is None else f"{x:,.0f}"


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.steps < BATCH:
        parser.error(f"--steps must be at least one batch of {BATCH}, got {args.steps}")
    if args.cleanrl_steps % CLEANRL_BATCH:
        parser.error(f"--cleanrl-steps must be whole batches of {CLEANRL_BATCH}, got {args.cleanrl_steps}")
    bad = [n for n in args.num_envs_list if BATCH % n]
    if bad:
        parser.error(f"--num-envs-list values must divide {BATCH}, got {bad}")
    for script in args.scripts:
        if not (REPO / f"{script}.py").is_file():
            parser.error(f"{REPO / script}.py does not exist")
    sys.path.insert(0, str(REPO))
    # The vector env factory is a shared section, identical in every script: take the first's.
    make_vector_env = importlib.import_module(args.scripts[0]).make_vector_env
    failures = []

    def attempt(measure, *measure_args):
        try:
            return measure(*measure_args)
        except Failed as error:
            failures.append(str(error))
            print(f"  failed: {error}", file=sys.stderr, flush=True)
            return None

    sb3_skip = "--no-sb3" if args.no_sb3 else sb3_available(args.sb3_python)
    print(f"speed.py: {args.steps:,} steps per measurement, one at a time, {args.rounds} round(s); default "
          f"settings (1 env, sync, batch {BATCH}, torch threads 1, CPU)", flush=True)
    cleanrl_pair = args.cleanrl_git is not None and "ppo_clip" in args.scripts and "CartPole-v1" in args.envs
    with tempfile.TemporaryDirectory(prefix="speed-") as workdir:
        rounds = {}  # (who, env) -> the value of each round; a failed measurement is left out

        def measure(key, function, *function_args):
            value = attempt(function, *function_args)
            if value is not None:
                rounds.setdefault(key, []).append(value)
                shown = value if isinstance(value, tuple) else (value,)
                print(f"[speed.py] {' '.join(key)}: {' / '.join(f'{v:,.0f}' for v in shown)} SPS", flush=True)

        for _ in range(args.rounds):
            for env in args.envs:
                measure(("raw env", env), lambda: raw_sps(make_vector_env, env, 1, args.steps))
                for script in args.scripts:
                    measure((script, env), train_sps, args.python, script, env, args.steps, [], workdir)
                if sb3_skip is None:
                    measure(("SB3 PPO", env), sb3_sps, args.sb3_python, env, args.steps)
            if cleanrl_pair:
                measure(("ppo_clip at CleanRL's settings", "CartPole-v1"), train_process_sps, args.python,
                        "ppo_clip", "CartPole-v1", args.cleanrl_steps, CLEANRL_FLAGS, workdir)
                measure(("CleanRL ppo.py", "CartPole-v1"), cleanrl_ppo_sps, args.cleanrl_python or args.sb3_python,
                        args.cleanrl_git, "CartPole-v1", args.cleanrl_steps, workdir)

        def median(who, env, part=None):  # None where every round failed
            values = rounds.get((who, env))
            return values and statistics.median(v if part is None else v[part] for v in values)

        raw = {env: median("raw env", env) for env in args.envs}
        train = {(script, env): median(script, env) for script in args.scripts for env in args.envs}
        sb3 = {env: median("SB3 PPO", env) for env in args.envs}

        header = (f"{'script':<12} {'env':<16} {'train SPS':>10} {'raw env SPS':>12} {'train/raw':>10}"
                  f" {'SB3 PPO SPS':>12} {'ours/SB3':>9}")
        print("\n" + header + "\n" + "-" * len(header))
        for env in args.envs:
            for script in args.scripts:
                ours = train[script, env]
                print(f"{script:<12} {env:<16} {num(ours):>10} {num(raw[env]):>12} "
                      f"{ratio_text(ours, raw[env], True):>10} {num(sb3.get(env)) if sb3_skip is None else '-':>12} "
                      f"{ratio_text(ours, sb3.get(env), False):>9}")
        if sb3_skip is not None:
            print(f"SB3 PPO: skipped ({sb3_skip}; see --sb3-python)")

        print("\ngoals (issue 5):")
        if "Hopper-v5" in args.envs:
            parts = [f"{s} {ratio_text(train[s, 'Hopper-v5'], raw['Hopper-v5'], True)}"
                     + ("" if None in (train[s, "Hopper-v5"], raw["Hopper-v5"]) else
                        " (met)" if train[s, "Hopper-v5"] >= HOPPER_GOAL * raw["Hopper-v5"] else " (NOT met)")
                     for s in args.scripts]
            print(f"  Hopper-v5: training SPS >= {HOPPER_GOAL:.0%} of raw single-env SPS: {', '.join(parts)}")
        if "CartPole-v1" in args.envs:
            if sb3_skip is None:
                parts = [f"{s} {ratio_text(train[s, 'CartPole-v1'], sb3.get('CartPole-v1'), False)}"
                         + ("" if None in (train[s, "CartPole-v1"], sb3.get("CartPole-v1")) else
                            " (met)" if train[s, "CartPole-v1"] >= SB3_GOAL * sb3["CartPole-v1"] else " (NOT met)")
                         for s in args.scripts]
                print(f"  CartPole-v1: training SPS >= {SB3_GOAL:g}x SB3 PPO's: {', '.join(parts)}")
            else:
                print(f"  CartPole-v1: training SPS >= {SB3_GOAL:g}x SB3 PPO's: not measured (SB3 skipped)")

        if cleanrl_pair:
            ours, theirs = (median(who, "CartPole-v1", 0) for who in ("ppo_clip at CleanRL's settings",
                                                                        "CleanRL ppo.py"))
            print(f"\nCartPole-v1 at CleanRL ppo.py's settings, {args.cleanrl_steps:,} steps, whole process "
                  f"(own in-loop SPS in brackets), median of {args.rounds} round(s):")
            for who in ("ppo_clip at CleanRL's settings", "CleanRL ppo.py"):
                print(f"  {who:<32} {num(median(who, 'CartPole-v1', 0)):>8} "
                      f"({num(median(who, 'CartPole-v1', 1))})")
            verdict = "" if None in (ours, theirs) else " (met)" if ours >= CLEANRL_GOAL * theirs else " (NOT met)"
            print(f"  ppo_clip / CleanRL ppo.py: {ratio_text(ours, theirs, False)}; goal >= "
                  f"{CLEANRL_GOAL:g}x{verdict}")
        elif args.cleanrl_git is not None:
            print("\nCleanRL ppo.py: skipped (the pair needs ppo_clip among --scripts and CartPole-v1 among --envs)")

        if not args.no_scaling:
            print(f"\nscaling: SPS by --num-envs N, batch kept at {BATCH} (--num-steps {BATCH}/N)")
            header = f"{'script':<12} {'env':<16} {'measure':<7}" + "".join(
                f" {f'N={n}':>9}" for n in args.num_envs_list)
            lines = [header, "-" * len(header)]
            for env in args.envs:
                cells = {}
                for n in args.num_envs_list:
                    cells["raw", n] = attempt(lambda: raw_sps(make_vector_env, env, n, args.steps))
                    for script in args.scripts:
                        extra = ["--num-envs", str(n), "--num-steps", str(BATCH // n)]
                        cells[script, n] = attempt(train_sps, args.python, script, env, args.steps, extra,
                                                   workdir)
                for who in [*args.scripts, "raw"]:
                    label = ("raw env", "raw") if who == "raw" else (who, "train")
                    lines.append(f"{label[0]:<12} {env:<16} {label[1]:<7}"
                                 + "".join(f" {num(cells[who, n]):>9}" for n in args.num_envs_list))
            print("\n".join(lines))
    if failures:
        print(f"speed.py: {len(failures)} measurements failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
