"""Steps to solve: the first training step at which the mean raw return of the
last WINDOW finished episodes reaches THRESHOLD (CartPole-v1: 475 over 20).

    python benchmarks/solved.py runs/CartPole-v1__ppo_clip__*        # one line per run, then the median
    python benchmarks/solved.py --threshold -200 --window 20 runs/Pendulum-v1__*
"""

import argparse
import csv
import statistics
import sys
from pathlib import Path


def steps_to_threshold(episodes_csv, threshold, window):
    """global_step of the episode that first completes a window with mean >= threshold, or None."""
    with open(episodes_csv, newline="") as f:
        episodes = [(int(row["global_step"]), float(row["return"])) for row in csv.DictReader(f)]
    return first_solved_step(episodes, threshold, window)


def first_solved_step(episodes, threshold, window):
    """The same for a list of (global_step, return) pairs in the order they ended."""
    for end in range(window, len(episodes) + 1):
        if sum(r for _, r in episodes[end - window:end]) / window >= threshold:
            return episodes[end - 1][0]
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--threshold", type=float, default=475.0, help="(default: %(default)s, CartPole-v1)")
    parser.add_argument("--window", type=int, default=20, help="episodes averaged (default: %(default)s)")
    args = parser.parse_args(argv)
    solved = []
    for run_dir in args.run_dirs:
        step = steps_to_threshold(run_dir / "episodes.csv", args.threshold, args.window)
        print(f"{run_dir}: {'not solved' if step is None else f'{step:,} steps'}")
        solved.append(float("inf") if step is None else step)
    median = statistics.median(solved)
    print(f"median over {len(solved)} runs: {'not solved' if median == float('inf') else f'{median:,.0f} steps'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
