"""The "SB3 PPO" anchor, reproducible: Stable-Baselines3 PPO on one env, several seeds.

    /path/to/sb3-venv/bin/python benchmarks/sb3_ppo.py --env Hopper-v5 --seeds 1 2 3

Run it with an interpreter that has stable-baselines3 (it is not a dependency of
this project). Each seed trains SB3's PPO with its own defaults (the PPO paper's
MuJoCo settings: 2,048 steps per batch, 10 epochs of 64-sample minibatches, Adam
3e-4, 64-64 tanh networks) plus VecNormalize on observations and rewards, as our
scripts normalize both, for --total-timesteps on CPU with one torch thread. It
then scores the run on both of BENCHMARKS.md's metrics:

- training score: the mean raw return of the last 100 training episodes (from
  SB3's Monitor, which sees rewards before VecNormalize scales them);
- deterministic evaluation: 20 episodes with the mean action, the observation
  statistics frozen at the end of training.

Each seed writes <out>/<env>/seed<k>/0.monitor.csv (SB3 Monitor's episodes) and
result.json; a seed whose result.json exists is skipped, so an interrupted sweep
continues where it stopped.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: find benchmarks/
from benchmarks.evaluate import EPISODES as EVAL_EPISODES  # noqa: E402  (the RL Zoo's 20)
from benchmarks.report import FINAL_EPISODES  # noqa: E402  (the training score's window, 100)

EVAL_SEED_OFFSET = 10_000  # evaluation episodes use seeds no training episode used


class OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def train_and_score(env_id, seed, total_timesteps, run_dir):
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import VecNormalize

    torch.set_num_threads(1)  # 64-unit networks: more threads only contend (as our scripts)
    venv = VecNormalize(make_vec_env(env_id, n_envs=1, seed=seed, monitor_dir=str(run_dir)))
    model = PPO("MlpPolicy", venv, seed=seed, device="cpu", verbose=0)
    model.learn(total_timesteps=total_timesteps)
    returns = np.loadtxt(run_dir / "0.monitor.csv", delimiter=",", skiprows=2, usecols=0, ndmin=1)
    eval_env = VecNormalize(make_vec_env(env_id, n_envs=1, seed=seed + EVAL_SEED_OFFSET),
                            training=False, norm_reward=False)
    eval_env.obs_rms = venv.obs_rms  # the statistics the policy was trained with
    eval_returns, _ = evaluate_policy(model, eval_env, n_eval_episodes=EVAL_EPISODES,
                                      deterministic=True, return_episode_rewards=True)
    return {"env": env_id, "seed": seed, "total_timesteps": total_timesteps,
            "train_score": float(np.mean(returns[-FINAL_EPISODES:])), "episodes": len(returns),
            "eval_mean": float(np.mean(eval_returns)), "eval_returns": [float(r) for r in eval_returns]}


def main(argv=None):
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="Hopper-v5", help="Gymnasium id (default: %(default)s)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="(default: %(default)s)")
    parser.add_argument("--total-timesteps", type=int, default=1_000_000, help="(default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/anchors/sb3_ppo"),
                        help="folder of the runs (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        import stable_baselines3  # noqa: F401
    except ImportError:
        print(f"{parser.prog}: error: {sys.executable} cannot import stable_baselines3; "
              "run this with an interpreter that has it", file=sys.stderr)
        return 2
    results = []
    for seed in args.seeds:
        run_dir = args.out / args.env / f"seed{seed}"
        done = run_dir / "result.json"
        if not done.exists():
            run_dir.mkdir(parents=True, exist_ok=True)
            result = train_and_score(args.env, seed, args.total_timesteps, run_dir)
            done.write_text(json.dumps(result, indent=2))
        results.append(json.loads(done.read_text()))
        print(f"{args.env} seed {seed}: training score {results[-1]['train_score']:,.0f}, "
              f"deterministic evaluation {results[-1]['eval_mean']:,.0f}", flush=True)
    for key, name in (("train_score", "training score"), ("eval_mean", "deterministic evaluation")):
        values = [r[key] for r in results]
        print(f"{args.env}, {len(values)} seeds: {name} {np.mean(values):,.0f} ± {np.std(values):,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
