"""Training speed on Atari: each script at its Atari defaults, against the raw preprocessed
environment (the limit) and against CleanRL's ppo_atari.py at its own settings.

    python benchmarks/atari_speed.py --cleanrl-git /path/to/cleanrl/git/dir

One measurement at a time, in this order: the raw environment (the scripts' own
make_vector_env with the Atari default of 8 environments, stepping random actions),
each script training for --steps steps (progress.csv's `sps`, as in speed.py), then
CleanRL's ppo_atari.py for the same steps through ../shared/anchors/cleanrl_ppo_atari.sh
(its own venv; the SPS it prints last). The git directory is what the search tool's
`fetch github:vwxyzjn/cleanrl` returns; without --cleanrl-git CleanRL is skipped.
Read the ratios more than the absolute numbers: the machine is shared.
"""

import argparse
import importlib
import re
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
    parser.add_argument("--cleanrl-git", type=Path, help="CleanRL's git directory (default: skip CleanRL)")
    args = parser.parse_args(argv)
    module = importlib.import_module(args.scripts[0])
    num_envs = module.parse_args(["--env", args.env]).num_envs
    results = {}
    with tempfile.TemporaryDirectory(prefix="atari-speed-") as workdir:
        try:
            results["raw env"] = raw_sps(module.make_vector_env, args.env, num_envs, "sync", args.steps)
            for script in args.scripts:
                results[script] = train_sps(sys.executable, script, args.env, args.steps, [], workdir)
            if args.cleanrl_git is not None:
                results["CleanRL ppo_atari"] = cleanrl_sps(ANCHOR, args.cleanrl_git, args.env, args.steps,
                                                           workdir)
        except Failed as error:
            print(f"atari_speed.py: error: {error}", file=sys.stderr)
            return 1
    print(f"{args.env}, {args.steps:,} steps per measurement, {num_envs} environments, CPU, 1 torch thread")
    print(f"{'who':<18} {'SPS':>7} {'of raw':>7}" + (f" {'/ CleanRL':>9}" if "CleanRL ppo_atari" in results else ""))
    for who, sps in results.items():
        line = f"{who:<18} {sps:>7,.0f} {sps / results['raw env']:>7.0%}"
        if "CleanRL ppo_atari" in results:
            line += f" {sps / results['CleanRL ppo_atari']:>8.2f}x"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
