"""Training speed on Atari: each script at its Atari defaults, against the raw preprocessed
environment (the limit) and against CleanRL's ppo_atari.py at its own settings.

    python benchmarks/atari_speed.py --cleanrl-git /path/to/cleanrl/git/dir
    python benchmarks/atari_speed.py --scripts ppo_clip --variant "ppo_clip --num-envs 4" --rounds 2

One measurement at a time, in this order: the raw environment (the scripts' own
make_vector_env with the Atari default of 8 environments, stepping random actions),
each script training for --steps steps (progress.csv's `sps`, as in speed.py), each
--variant (a script with flags of its own), then CleanRL's ppo_atari.py for the same steps
through ../shared/anchors/cleanrl_ppo_atari.sh (its own venv; the SPS it prints last).
--rounds repeats that order, so each side is measured between the others and the table
gives every round and the median; ratios are of the medians. The git directory is what
the search tool's `fetch github:vwxyzjn/cleanrl` returns; without --cleanrl-git CleanRL
is skipped. Read the ratios more than the absolute numbers: the machine is shared.
"""

import argparse
import importlib
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: find benchmarks/
from benchmarks.speed import SCRIPTS, Failed, raw_sps, train_sps  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
ANCHOR = REPO.parent / "shared" / "anchors" / "cleanrl_ppo_atari.sh"


def cleanrl_sps(anchor, git_dir, env, steps, workdir):
    """CleanRL ppo_atari.py's own SPS (global steps over the time since its loop started)."""
    game = env.split("/")[-1].split("-")[0] + "NoFrameskip-v4"  # ALE/Breakout-v5 -> BreakoutNoFrameskip-v4
    out = Path(workdir) / "cleanrl"
    result = subprocess.run(["bash", str(anchor), str(git_dir), "1", str(steps), str(out), "--env-id", game],
                            capture_output=True, text=True)
    found = re.findall(r"SPS: (\d+)", (out / "log.txt").read_text()) if (out / "log.txt").exists() else []
    if result.returncode != 0 or not found:
        lines = (result.stderr or result.stdout).strip().splitlines() or ["no output"]
        raise Failed(f"CleanRL exited with {result.returncode}: {lines[-1]}")
    return float(found[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="ALE/Breakout-v5", help="an ALE/* id (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=16_384,
                        help="steps per measurement: whole batches of every script (default: %(default)s)")
    parser.add_argument("--scripts", nargs="+", choices=SCRIPTS, default=SCRIPTS, metavar="SCRIPT")
    parser.add_argument("--variant", action="append", default=[], metavar="'SCRIPT FLAGS'",
                        help="also a script with flags of its own, e.g. 'trpo --torch-threads 2' (repeatable)")
    parser.add_argument("--rounds", type=int, default=1, help="times the whole order runs (default: %(default)s)")
    parser.add_argument("--cleanrl-git", type=Path, help="CleanRL's git directory (default: skip CleanRL)")
    args = parser.parse_args(argv)
    variants = [shlex.split(v) for v in args.variant]
    if any(not v or v[0] not in SCRIPTS for v in variants) or args.rounds < 1:
        parser.exit(2, f"atari_speed.py: error: a --variant starts with one of {', '.join(SCRIPTS)}; "
                       f"--rounds is at least 1\n")
    module = importlib.import_module(args.scripts[0])
    num_envs = module.parse_args(["--env", args.env]).num_envs
    results = {}  # who -> SPS of each round
    with tempfile.TemporaryDirectory(prefix="atari-speed-") as workdir:
        try:
            for _ in range(args.rounds):
                measure = {"raw env": lambda: raw_sps(module.make_vector_env, args.env, num_envs,
                                                      args.steps)}
                for script, *flags in [[script] for script in args.scripts] + variants:
                    measure[shlex.join([script, *flags])] = (
                        lambda script=script, flags=flags: train_sps(sys.executable, script, args.env,
                                                                     args.steps, flags, workdir))
                if args.cleanrl_git is not None:
                    measure["CleanRL ppo_atari"] = lambda: cleanrl_sps(ANCHOR, args.cleanrl_git, args.env,
                                                                       args.steps, workdir)
                for who, run in measure.items():
                    results.setdefault(who, []).append(run())
                    print(f"[atari_speed.py] {who}: {results[who][-1]:,.0f} SPS", flush=True)
        except Failed as error:
            print(f"atari_speed.py: error: {error}", file=sys.stderr)
            return 1
    median = {who: statistics.median(sps) for who, sps in results.items()}
    cleanrl = median.get("CleanRL ppo_atari")
    print(f"{args.env}, {args.steps:,} steps per measurement, {num_envs} environments, CPU, "
          f"{args.rounds} round(s); SPS of each round, then the median")
    width = max(len(who) for who in results) + 1
    print(f"{'who':<{width}} {'SPS':>{8 * args.rounds + 8}} {'of raw':>7}" + (f" {'/ CleanRL':>9}" if cleanrl else ""))
    for who, sps in results.items():
        rounds = " ".join(f"{x:>7,.0f}" for x in sps)
        line = f"{who:<{width}} {rounds} {median[who]:>7,.0f} {median[who] / median['raw env']:>7.0%}"
        print(line + (f" {median[who] / cleanrl:>8.2f}x" if cleanrl else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
