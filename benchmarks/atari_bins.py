"""Learning curves of Atari runs as a table: the mean raw score of the games that ended
in each bin of steps, one row per run. BENCHMARKS.md "Atari" quotes its output.

    python benchmarks/atari_bins.py benchmarks/archive/5e7cd51-breakout
    python benchmarks/atari_bins.py --bin 100000 --bins 10 benchmarks/results/ALE_Breakout-v5/*

Each folder under the given one is a run: a run directory of the scripts (its
episodes.csv and progress.csv), or CleanRL's console log (log.txt, its lines
"global_step=..., episodic_return=[...]"). A bin the run only partly covered is
marked with *, one it never reached with a dash.
"""
import argparse
import csv
import re
from pathlib import Path

BIN = 40_000  # steps per bin: about 200 games of Breakout at a near-random start
BINS = 8
CLEANRL_LINE = re.compile(r"global_step=(\d+), episodic_return=\[([-\d.e]+)\]")


def binned_means(games, last_step, width=BIN, count=BINS):
    """games: (step the game ended at, its score). Per bin: the formatted mean score,
    with * where the run stopped inside the bin, or a dash where no game ended in it."""
    sums, counts = [0.0] * count, [0] * count
    for step, score in games:
        if step // width < count:
            sums[step // width] += score
            counts[step // width] += 1
    cells = []
    for k in range(count):
        if counts[k] == 0:
            cells.append("—")
        else:
            partly = last_step < (k + 1) * width
            cells.append(f"{sums[k] / counts[k]:.2f}" + ("*" if partly else ""))
    return cells


def read_run(folder):
    """(games, last step) of a run directory or of a CleanRL log."""
    if (folder / "log.txt").exists():
        games = [(int(m[1]), float(m[2])) for m in CLEANRL_LINE.finditer((folder / "log.txt").read_text())]
        return games, max(step for step, _ in games)
    with open(folder / "episodes.csv", newline="") as f:
        games = [(int(row["global_step"]), float(row["return"])) for row in csv.DictReader(f)]
    with open(folder / "progress.csv", newline="") as f:
        last = int(list(csv.DictReader(f))[-1]["global_step"])
    return games, last


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", type=Path, nargs="+",
                        help="folders of runs (one subfolder each); rows are named folder/run "
                             "when there are several")
    parser.add_argument("--bin", type=int, default=BIN, help="steps per bin (default: %(default)s)")
    parser.add_argument("--bins", type=int, default=BINS, help="bins per row (default: %(default)s)")
    args = parser.parse_args()
    print("| run | to step | " + " | ".join(f"{k * args.bin // 1000}–{(k + 1) * args.bin // 1000}K"
                                            for k in range(args.bins)) + " |")
    print("|---|---|" + "---|" * args.bins)
    for folder in args.folders:
        for run in sorted(p for p in folder.iterdir() if p.is_dir()):
            if not ((run / "log.txt").exists() or (run / "progress.csv").exists()):
                continue  # a run that has not finished its first update: nothing to show yet
            games, last = read_run(run)
            name = run.name if len(args.folders) == 1 else f"{folder.name}/{run.name}"
            cells = binned_means(games, last, args.bin, args.bins)
            print(f"| {name} | {last:,} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
