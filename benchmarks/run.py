"""Train the scripts on environments x seeds, as parallel subprocesses, resumably.

    python benchmarks/run.py --algos ppo_clip trpo --envs Hopper-v5 --seeds 1 2 3
    python benchmarks/run.py --envs CartPole-v1 --total-timesteps 50000 -- --num-steps 256
    python benchmarks/run.py --algos ppo_penalty --envs Humanoid-v5 --seeds 1 --nproc 2 \
        --total-timesteps 1000000 --tag s1024 -- --num-steps 1024   # 2 torchrun ranks per run

Layout: each run trains in <results>/<env>/<algo>/seed<k>/ (its --run-dir) and
its console output goes to <results>/<env>/<algo>/seed<k>.log, outside the run
directory because the scripts refuse to start in a directory that holds files.

Re-running the same command continues the suite: a run that reached its budget
(rounded down to whole batches) is skipped, one with a model.pt that did not is
continued with --resume, and a directory without model.pt (the run died before
its first checkpoint) is moved aside to seed<k>.incomplete-<time>, never
deleted, and the run starts afresh. Flags after `--` go to every script, so
they must be flags that every chosen script accepts, and the same on every
re-run (the scripts refuse to resume with different settings).

Runs with settings other than the defaults are kept apart from the default
runs: `--tag zoo -- --cg-iters 25` trains into <results>/<env>/<algo>+zoo/, and
report.py shows them as a separate row labelled "tuned", with the settings that
differ from the default row beside it.

Each run is evaluated the moment it finishes: benchmarks/evaluate.py writes its
eval.json (20 deterministic episodes, each one's return and length, the checkpoint's
sha256) before the next run starts in its place, so no result depends on a model.pt
that the machine may lose (Atari's are not committed). A finished run that lacks an
up-to-date eval.json is evaluated when the suite is run again.

Ctrl-C reaches the children too (they share the terminal's process group):
each writes a checkpoint and stops; run.py waits for them and exits with 130.
Then `benchmarks/report.py <results>` summarizes what is there.

Standard library only: run.py never imports torch or gymnasium itself.
"""

import argparse
import csv
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ALGORITHMS = ["ppo_clip", "ppo_penalty", "trpo"]
# Steps per run when --total-timesteps is not given. Classic control: enough for
# the scripts to solve the task with headroom; MuJoCo: the PPO paper's 1M budget,
# at which the anchors in report.py were measured.
DEFAULT_BUDGETS = {
    "CartPole-v1": 100_000,
    "Acrobot-v1": 100_000,
    "Pendulum-v1": 200_000,
    "Hopper-v5": 1_000_000,
    "Walker2d-v5": 1_000_000,
    "HalfCheetah-v5": 1_000_000,
    # The rest of the PPO paper's seven MuJoCo tasks (its Figure 3 and Table 1), also at 1M.
    "InvertedPendulum-v5": 1_000_000,
    "InvertedDoublePendulum-v5": 1_000_000,
    "Reacher-v5": 1_000_000,
    "Swimmer-v5": 1_000_000,
    # Atari: 1M steps (4M frames), what one CPU core trains in about two hours; the papers ran 10M.
    "ALE/Breakout-v5": 1_000_000,
}
PROGRESS_EVERY = 60.0  # seconds between progress lines while no run finishes
POLL_INTERVAL = 0.5  # seconds between checks of the children
EXIT_INTERRUPTED = 130  # what the scripts (and shells) return after Ctrl-C
FINISHED_PREFIX = "# run.py: finished at"  # the log's last line once a script exits cleanly at its budget
TAG_PATTERN = re.compile(r"[A-Za-z0-9_-]+")  # a folder-name suffix: nothing a shell or path would mangle


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" to each flag's help unless the help already says it."""

    def _get_help_string(self, action):
        return action.help if "default" in action.help else super()._get_help_string(action)


class OneLineParser(argparse.ArgumentParser):
    """Bad input gets one line on stderr, not argparse's usage block."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def default_jobs():
    """The cores this process may run on (fewer than os.cpu_count() under taskset or cgroups)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def build_parser():
    parser = OneLineParser(description=__doc__,
                           usage="%(prog)s [options] [-- script flags...]",
                           formatter_class=HelpFormatter)
    parser.add_argument("--algos", nargs="+", default=ALGORITHMS, choices=ALGORITHMS, metavar="ALGO",
                        help=f"scripts to train, from: {' '.join(ALGORITHMS)}")
    parser.add_argument("--envs", nargs="+", default=list(DEFAULT_BUDGETS), metavar="ENV",
                        help="Gymnasium ids")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3], metavar="SEED",
                        help="seeds (3, as in the CleanRL and sb3-contrib anchors)")
    parser.add_argument("--results", type=Path, default=Path("results"),
                        help="folder of the suite: <results>/<env>/<algo>/seed<k>/ and seed<k>.log")
    parser.add_argument("--total-timesteps", type=int, default=None,
                        help="steps per run for every env (default: per env, "
                             + ", ".join(f"{env} {steps:,}" for env, steps in DEFAULT_BUDGETS.items()) + ")")
    parser.add_argument("--jobs", type=int, default=default_jobs(),
                        help="runs at a time (default: the number of cores here)")
    parser.add_argument("--python", default=sys.executable,
                        help="interpreter that runs the scripts")
    parser.add_argument("--nproc", type=int, default=1,
                        help="processes per run: more than 1 runs each script under torchrun "
                             "--standalone as that many synchronized ranks (README: Distributed)")
    parser.add_argument("--tag", default=None,
                        help="label of runs with non-default flags (after --): they train in "
                             "<results>/<env>/<algo>+<tag>/ and report.py shows them as a tuned row "
                             "(default: none, the default settings)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print what each run would do (skip, resume, start) and exit")
    return parser


def parse_args(argv):
    """Everything after the first `--` is handed to the scripts untouched."""
    argv = list(sys.argv[1:] if argv is None else argv)
    script_args = argv[argv.index("--") + 1:] if "--" in argv else []
    parser = build_parser()
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    args.script_args = script_args
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    if args.nproc < 1:
        parser.error(f"--nproc must be at least 1, got {args.nproc}")
    if args.total_timesteps is not None and args.total_timesteps < 1:
        parser.error(f"--total-timesteps must be positive, got {args.total_timesteps}")
    if args.total_timesteps is None:
        unknown = [env for env in args.envs if env not in DEFAULT_BUDGETS]
        if unknown:
            parser.error(f"no default budget for {', '.join(unknown)}: pass --total-timesteps")
    if args.tag is not None:
        if not TAG_PATTERN.fullmatch(args.tag):
            parser.error(f"--tag {args.tag!r}: use letters, digits, '-' and '_' only")
        if not script_args:
            parser.error("--tag labels runs with non-default settings: pass the script flags after --")
    elif script_args:
        # Not an error (a smaller --num-steps for a quick look is fine), but such runs
        # would be reported as the default row.
        print("[run.py] note: flags after -- without --tag: report.py will show these runs as the "
              "default settings", file=sys.stderr)
    for algo in args.algos:
        if not (REPO / f"{algo}.py").is_file():
            parser.error(f"{REPO / algo}.py does not exist")
    return args


# ----------------------------------------------------------------------------------
# One run: where it lives and how far it got, read from the files the scripts write
# ----------------------------------------------------------------------------------
class Run:
    def __init__(self, results, env, algo, seed, budget, tag=None):
        self.env, self.algo, self.seed, self.budget = env, algo, seed, budget
        folder = algo if tag is None else f"{algo}+{tag}"
        self.dir = results / env.replace("/", "_") / folder / f"seed{seed}"  # ALE/X: one folder
        self.log = self.dir.with_name(f"seed{seed}.log")
        self.name = f"{env}/{folder}/seed{seed}"

    def batch_size(self):
        """num_envs x num_steps from config.json, or None before the script wrote it."""
        try:
            settings = json.loads((self.dir / "config.json").read_text())["settings"]
            return int(settings["num_envs"]) * int(settings["num_steps"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def target(self):
        """The step the run ends at: the budget rounded down to whole batches, as the
        scripts do. Before config.json exists the batch is unknown: the budget itself."""
        batch = self.batch_size()
        return self.budget if batch is None else self.budget // batch * batch

    def last_row(self):
        """The last row of progress.csv (a dict), or None."""
        try:
            with open(self.dir / "progress.csv", newline="") as f:
                rows = list(csv.DictReader(f))
        except OSError:
            return None
        return rows[-1] if rows else None

    def step(self):
        row = self.last_row()
        return int(row["global_step"]) if row else 0

    def state(self):
        """'finished', 'resume', 'start' (nothing there) or 'restart' (died before model.pt)."""
        if not self.dir.exists() or (self.dir.is_dir() and not any(self.dir.iterdir())):
            return "start"
        model, progress = self.dir / "model.pt", self.dir / "progress.csv"
        if not model.exists():
            return "restart"
        step = self.step()  # read progress.csv once
        if step < self.target() or not progress.exists():
            return "resume"
        # At its budget: finished, unless the process died between its last progress
        # row and the model.pt after it. The line run.py writes into the log when the
        # script exits cleanly settles it, and survives a git clone, which gives
        # every file a new modification time. Without that line (a run trained by
        # hand, say) the times decide: a model.pt older than progress.csv is stale.
        if self.finished_line(step) in self.log_lines() or model.stat().st_mtime >= progress.stat().st_mtime:
            return "finished"
        return "resume"

    def finished_line(self, step):
        return f"{FINISHED_PREFIX} {step:,} steps"

    def log_lines(self):
        try:
            return self.log.read_text().splitlines()
        except OSError:
            return []

    def mark_finished(self):
        with open(self.log, "a") as log:
            log.write(self.finished_line(self.step()) + "\n")

    def command(self, python, script_args, resume, nproc=1):
        # torchrun (torch.distributed.run) forwards a Ctrl-C to its ranks once: they run in
        # sessions of their own, so the terminal's signal reaches torchrun alone.
        launcher = [python] if nproc == 1 else [python, "-m", "torch.distributed.run", "--standalone",
                                                 "--nproc_per_node", str(nproc)]
        cmd = [*launcher, str(REPO / f"{self.algo}.py"), "--env", self.env, "--seed", str(self.seed),
               "--total-timesteps", str(self.budget), *script_args]
        return cmd + (["--resume", str(self.dir)] if resume else ["--run-dir", str(self.dir)])


def move_aside(run):
    """Keep what a run that died early left, under a new name, and free its place."""
    aside = run.dir.with_name(f"{run.dir.name}.incomplete-{time.strftime('%Y%m%d-%H%M%S')}")
    run.dir.rename(aside)
    return aside


def launch(run, python, script_args, resume, nproc=1):
    """Start the run's script in the background, appending its output to the log."""
    run.log.parent.mkdir(parents=True, exist_ok=True)
    cmd = run.command(python, script_args, resume, nproc)
    with open(run.log, "a") as log:
        log.write(f"# run.py {time.strftime('%Y-%m-%d %H:%M:%S')}: {shlex.join(cmd)}\n")
        log.flush()
        # Same process group as run.py (the default): Ctrl-C at the terminal reaches
        # the child directly, and the child saves its own checkpoint.
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})


def evaluate(run, python):
    """benchmarks/evaluate.py on a finished run, its output appended to the run's log; the
    evaluation's one line is returned. It skips a run whose eval.json is up to date."""
    cmd = [python, str(REPO / "benchmarks" / "evaluate.py"), str(run.dir)]
    result = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    with open(run.log, "a") as log:
        log.write(f"# run.py: {shlex.join(cmd)}\n{result.stdout}{result.stderr}")
    lines = (result.stdout + result.stderr).strip().splitlines() or [f"exit {result.returncode}"]
    return ("" if result.returncode == 0 else "evaluation FAILED: ") + lines[-1]


def last_log_line(run):
    try:
        lines = [line for line in run.log.read_text().splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


# ----------------------------------------------------------------------------------
# The suite
# ----------------------------------------------------------------------------------
class Progress:
    """Runs and steps done over the whole suite, and an ETA from the steps per
    second observed since this invocation started."""

    def __init__(self, runs):
        self.runs = runs
        self.start_time, self.start_steps = time.time(), self.steps_done()
        self.last_print = self.start_time

    def steps_done(self):
        return sum(min(run.step(), run.target()) for run in self.runs)

    def line(self, runs_done, note=""):
        self.last_print = now = time.time()
        done, total = self.steps_done(), sum(run.target() for run in self.runs)
        sps = (done - self.start_steps) / max(now - self.start_time, 1e-9)
        eta = time.strftime("%H:%M:%S", time.gmtime((total - done) / sps)) if sps > 0 else "?"
        if sps > 0 and (total - done) / sps >= 86400:
            eta = f"{(total - done) / sps / 86400:.1f} days"
        print(f"[run.py] {runs_done}/{len(self.runs)} runs done | {done:,}/{total:,} steps | "
              f"{sps:,.0f} SPS | ETA {eta}" + (f" | {note}" if note else ""), flush=True)


class StopRequested:
    """The first Ctrl-C stops new launches; the children get the same signal from
    the terminal and stop by themselves, so run.py only waits for them."""

    def __init__(self):
        self.requested = False

    def __call__(self, signum, frame):
        if not self.requested:
            print("[run.py] Ctrl-C: no new runs; waiting for the running ones to save a checkpoint",
                  flush=True)
        self.requested = True


def plan(args):
    runs = []
    for seed in args.seeds:  # seed-major: a suite stopped early has whole seeds of every env and algo
        for env in args.envs:
            for algo in args.algos:
                budget = args.total_timesteps or DEFAULT_BUDGETS[env]
                runs.append(Run(args.results.resolve(), env, algo, seed, budget, args.tag))
    return runs


def main(argv=None):
    args = parse_args(argv)
    runs = plan(args)
    states = {run.name: run.state() for run in runs}
    if args.dry_run:
        for run in runs:
            print(f"{states[run.name]:>8}  {run.name}  ({run.step():,}/{run.target():,} steps)")
        return 0
    todo = [run for run in runs if states[run.name] != "finished"]
    for run in runs:
        if states[run.name] == "finished" and not (run.dir / "eval.json").exists():
            print(f"[run.py] {evaluate(run, args.python)}", flush=True)
    counts = {s: sum(v == s for v in states.values()) for s in ("finished", "resume", "start", "restart")}
    print(f"[run.py] {len(runs)} runs in {args.results}: {counts['finished']} finished (skipped), "
          f"{counts['resume']} to resume, {counts['start'] + counts['restart']} to start"
          + (f"; {min(args.jobs, len(todo))} at a time" if todo else ""), flush=True)
    progress = Progress(runs)
    stop = StopRequested()
    signal.signal(signal.SIGINT, stop)
    running, failed, interrupted = {}, [], []
    runs_done = counts["finished"]
    while (todo and not stop.requested) or running:
        while todo and len(running) < args.jobs and not stop.requested:
            run = todo.pop(0)
            if states[run.name] == "restart":
                print(f"[run.py] {run.name} died before its first checkpoint: moved to "
                      f"{move_aside(run).name}, starting again", flush=True)
            resume = states[run.name] == "resume"
            running[run.name] = (run, launch(run, args.python, args.script_args, resume, args.nproc))
        time.sleep(POLL_INTERVAL)
        for name, (run, proc) in list(running.items()):
            code = proc.poll()
            if code is None:
                continue
            del running[name]
            if code == 0:
                run.mark_finished()
                runs_done += 1
                row = run.last_row() or {}
                progress.line(runs_done, f"finished {name} (return {float(row.get('return_mean', 'nan')):.1f})")
                print(f"[run.py] {evaluate(run, args.python)}", flush=True)
            elif code == EXIT_INTERRUPTED or stop.requested:
                interrupted.append(run)
            else:
                failed.append(run)
                print(f"[run.py] FAILED {name} (exit {code}): {last_log_line(run)} (log: {run.log})",
                      flush=True)
        if running and time.time() - progress.last_print >= PROGRESS_EVERY:
            progress.line(runs_done)
    if stop.requested or interrupted:
        print(f"[run.py] interrupted with {len(runs) - runs_done - len(failed)} runs unfinished; "
              f"run the same command again to continue the suite", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    if failed:
        print(f"[run.py] {len(failed)} runs failed: {', '.join(run.name for run in failed)}; "
              f"see their .log files", file=sys.stderr, flush=True)
        return 1
    print(f"[run.py] all {len(runs)} runs finished; summarize with: "
          f"python benchmarks/report.py {args.results} --out <dir>", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
