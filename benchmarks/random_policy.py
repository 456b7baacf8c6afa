"""The score of a uniformly random policy, the 0 of the PPO paper's normalized score
(Table 1: "random policy 0, best result 1"), measured on these environments.

    python benchmarks/random_policy.py          # the PPO paper's seven MuJoCo tasks, v5
    python benchmarks/random_policy.py --envs Hopper-v5 --episodes 200
    python benchmarks/random_policy.py --envs ALE/Breakout-v5   # whole games, as the scripts play them

Each episode is reset with seed + i and plays actions drawn uniformly from the action
space (seeded too), as the scripts' environments are made (the same time limits). ALE/*
ids go through the scripts' own Atari preprocessing (ppo_clip.make_env: FIRE after each
reset and lost life) and play whole games, a lost life reset and played on as in evaluation.
Writes benchmarks/anchors/random_policy.json: per env, the mean raw return, its std,
the episodes and the seed; report.py reads it. Re-running recomputes every env asked for.
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

import gymnasium as gym

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
import ppo_clip  # noqa: E402  the scripts' Atari preprocessing (make_env), the same in all three
OUT = REPO / "benchmarks" / "anchors" / "random_policy.json"
PPO_PAPER_TASKS = ["HalfCheetah-v5", "Hopper-v5", "InvertedDoublePendulum-v5", "InvertedPendulum-v5",
                   "Reacher-v5", "Swimmer-v5", "Walker2d-v5"]  # Figure 3 and Table 1
# The paper gives no count; 100 puts the standard error (std / 10) under 1% of each task's scores.
EPISODES = 100
SEED = 1


def random_returns(env_id, episodes, seed):
    """Raw returns of `episodes` whole episodes of uniformly random actions."""
    env = ppo_clip.make_env(env_id)() if ppo_clip.is_atari(env_id) else gym.make(env_id)
    returns = []
    env.action_space.seed(seed)
    try:
        for i in range(episodes):
            env.reset(seed=seed + i)
            total, done = 0.0, False
            while not done:
                _, reward, terminated, truncated, info = env.step(env.action_space.sample())
                total, done = total + float(reward), terminated or truncated
                if done and info.get("life_lost", False):  # Atari: the game goes on
                    env.reset()
                    done = False
            returns.append(total)
    finally:
        env.close()
    return returns


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=PPO_PAPER_TASKS, help="Gymnasium ids (default: %(default)s)")
    parser.add_argument("--episodes", type=int, default=EPISODES, help="episodes per env (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=OUT, help="JSON file to update (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.episodes < 2:
        parser.exit(2, f"{parser.prog}: error: --episodes must be at least 2, got {args.episodes}\n")
    scores = json.loads(args.out.read_text()) if args.out.exists() else {}
    for env_id in args.envs:
        try:
            returns = random_returns(env_id, args.episodes, SEED)
        except gym.error.Error as error:
            parser.exit(2, f"{parser.prog}: error: cannot make {env_id!r}: {error}\n")
        scores[env_id] = {"mean": statistics.fmean(returns), "std": statistics.pstdev(returns),
                          "episodes": args.episodes, "seed": SEED}
        print(f"{env_id}: random policy {scores[env_id]['mean']:.2f} +- {scores[env_id]['std']:.2f} "
              f"over {args.episodes} episodes", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(dict(sorted(scores.items())), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
