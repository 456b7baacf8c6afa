"""What tells walking from falling, per run: returns and episode lengths by bins of steps,
the last 100 training episodes, the deterministic evaluation (eval.json) and the forward
velocity of the final policy.

    python benchmarks/locomotion.py benchmarks/results/Humanoid-v5/*
    python benchmarks/locomotion.py --bin 250000 --bins 8 benchmarks/results/Humanoid-v5/ppo_penalty+g995

Each folder under a given one is a run directory of the scripts (its episodes.csv, and
config.json, model.pt and eval.json when there). Humanoid-v5 pays 5 per step alive, so a
mean return near 5 x the mean length is a body that stands, and the rest of the return is
mostly forward progress (1.25 x the x-velocity per step). The velocity is the mean of the
environment's info["x_velocity"] over --velocity-episodes deterministic episodes of the
run's model.pt (MuJoCo tasks report it; others print a dash).
"""
import argparse
import csv
import importlib
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
RECENT = 100  # training episodes in the "last" columns, as in report.py's training score
SEED = 1000  # the velocity episodes' starts: episode i is reset with SEED + i


def read_episodes(run_dir):
    with open(run_dir / "episodes.csv", newline="") as f:
        return [(int(r["global_step"]), float(r["return"]), int(r["length"])) for r in csv.DictReader(f)]


def bins(episodes, width, count):
    """Per bin of `width` steps: (mean return, mean length) of the episodes that ended in it."""
    cells = []
    for i in range(count):
        inside = [(r, n) for step, r, n in episodes if i * width < step <= (i + 1) * width]
        cells.append((statistics.fmean(r for r, _ in inside), statistics.fmean(n for _, n in inside))
                     if inside else None)
    return cells


@torch.no_grad()
def forward_velocity(run_dir, episodes):
    """Mean info["x_velocity"] over every step of `episodes` deterministic episodes, or None."""
    config = json.loads((run_dir / "config.json").read_text())
    sys.path.insert(0, str(REPO))
    script = importlib.import_module(config["algorithm"])
    agent = script.load_agent(run_dir / "model.pt")
    env = script.make_env(config["settings"]["env"])()
    velocities = []
    try:
        for i in range(episodes):
            obs, _ = env.reset(seed=SEED + i)
            done = False
            while not done:
                action = agent.distribution(torch.as_tensor(obs, dtype=torch.float32)[None]).mean[0]
                action = np.clip(action.numpy(), env.action_space.low, env.action_space.high)
                obs, _, terminated, truncated, info = env.step(action)
                if "x_velocity" not in info:
                    return None
                velocities.append(info["x_velocity"])
                done = terminated or truncated
    finally:
        env.close()
    return statistics.fmean(velocities)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.error = lambda message: parser.exit(2, f"{parser.prog}: error: {message}\n")
    parser.add_argument("folders", nargs="+", type=Path, help="run directories, or folders of them")
    parser.add_argument("--bin", type=int, default=250_000, help="steps per bin (default: %(default)s)")
    parser.add_argument("--bins", type=int, default=8, help="bins per row (default: %(default)s)")
    parser.add_argument("--velocity-episodes", type=int, default=5,
                        help="deterministic episodes for the forward velocity; 0: skip (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.bin < 1 or args.bins < 1 or args.velocity_episodes < 0:
        parser.error("--bin and --bins must be positive, --velocity-episodes non-negative")
    runs = []
    for folder in args.folders:
        if not folder.is_dir():
            parser.error(f"{folder} is not a folder")
        runs += [folder] if (folder / "episodes.csv").exists() else sorted(
            p for p in folder.iterdir() if (p / "episodes.csv").exists())
    if not runs:
        parser.error("no run directories (with an episodes.csv) under the given folders")
    edges = [f"{i * args.bin // 1000}–{(i + 1) * args.bin // 1000}K" for i in range(args.bins)]
    print("Return / mean episode length of the episodes that ended in each bin of steps; last: the last "
          f"{RECENT} training episodes; eval: eval.json (deterministic); v: mean forward velocity (m/s).\n")
    print("| run | steps | " + " | ".join(edges) + " | last | eval | v |")
    print("|---|---|" + "---|" * (args.bins + 3))
    for run in runs:
        episodes = read_episodes(run)
        cells = [f"{r:,.0f} / {n:.0f}" if r is not None else "–"
                 for r, n in (cell or (None, None) for cell in bins(episodes, args.bin, args.bins))]
        recent = episodes[-RECENT:]
        last = (f"{statistics.fmean(r for _, r, _ in recent):,.0f} / "
                f"{statistics.fmean(n for _, _, n in recent):.0f}") if recent else "–"
        evaluation = "–"
        if (run / "eval.json").exists():
            done = json.loads((run / "eval.json").read_text())
            evaluation = f"{done['mean']:,.0f} / {statistics.fmean(done['lengths']):.0f}"
        velocity = None
        if args.velocity_episodes and (run / "model.pt").exists():
            velocity = forward_velocity(run, args.velocity_episodes)
        name = f"{run.parent.name}/{run.name}"
        steps = episodes[-1][0] if episodes else 0
        print(f"| {name} | {steps:,} | " + " | ".join(cells)
              + f" | {last} | {evaluation} | {'–' if velocity is None else f'{velocity:.2f}'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
