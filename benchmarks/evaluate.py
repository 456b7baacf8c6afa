"""Final deterministic evaluation of trained runs, the RL Zoo's protocol: the run's last
model.pt, 20 whole episodes, the mean (Box) or most likely (Discrete) action. Some
anchors (sb3-contrib's TRPO numbers) are such evaluations, not training returns, so
they must be compared with this, not with the mean of the last training episodes.

    python benchmarks/evaluate.py benchmarks/results/Hopper-v5/*/seed*

Each run gets <run>/eval.json: each episode's return and length, how many a time limit
ended (on Atari, ALE's frame limit rather than game over), the mean return, and the
checkpoint's step and sha256, so the result outlives a model.pt that is not committed.
A run whose eval.json is for its current model.pt is skipped, so re-running is cheap.
"""

import argparse
import hashlib
import importlib
import json
import statistics
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
EPISODES = 20  # the RL Zoo evaluates 20 episodes (its benchmark's n_eval_episodes)
SEED = 1  # episode i is reset with SEED + i: every run is scored on the same starts


class OneLineParser(argparse.ArgumentParser):
    """Bad input gets one line on stderr, not argparse's usage block."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def evaluate_run(run_dir, episodes, seed):
    """Evaluate run_dir/model.pt with its own script; returns the eval.json dict, or None
    when the existing eval.json already belongs to this checkpoint."""
    config = json.loads((run_dir / "config.json").read_text())
    script = importlib.import_module(config["algorithm"])  # its own Agent and evaluate()
    checkpoint = script.load_checkpoint(run_dir / "model.pt")
    out = run_dir / "eval.json"
    if out.exists():
        done = json.loads(out.read_text())
        if (done.get("model_step"), done.get("episodes"), done.get("seed")) == (
                checkpoint["global_step"], episodes, seed):
            return None
    agent = script.load_agent(run_dir / "model.pt")
    games = script.evaluate(agent, checkpoint["settings"]["env"], episodes, seed)
    returns = [game["return"] for game in games]
    result = {"model_step": checkpoint["global_step"], "episodes": episodes, "seed": seed,
              "deterministic": True, "mean": statistics.fmean(returns), "returns": returns,
              "lengths": [game["length"] for game in games],
              "time_limit_episodes": sum(game["time_limit"] for game in games),
              "model_sha256": hashlib.sha256((run_dir / "model.pt").read_bytes()).hexdigest()}
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv=None):
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+", help="run directories (with config.json and model.pt)")
    parser.add_argument("--episodes", type=int, default=EPISODES, help="episodes per run (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=SEED, help="seed of the first episode (default: %(default)s)")
    args = parser.parse_args(argv)
    missing = [str(run) for run in args.runs if not (run / "model.pt").is_file()
               or not (run / "config.json").is_file()]
    if missing:
        print(f"evaluate.py: error: no config.json and model.pt in {', '.join(missing)}", file=sys.stderr)
        return 2
    sys.path.insert(0, str(REPO))
    torch.set_num_threads(1)  # tiny networks: more threads only contend
    for run in args.runs:
        result = evaluate_run(run, args.episodes, args.seed)
        print(f"{run}: " + ("up to date" if result is None else
                            f"{result['mean']:.1f} over {args.episodes} episodes, "
                            f"{result['time_limit_episodes']} ended by the time limit"), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
