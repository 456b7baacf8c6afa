"""Summarize a results folder of benchmarks/run.py: a Markdown table per env and learning curves.

    python benchmarks/report.py results --out report

writes report/results.md and report/learning_curves.png. It reads every run
directory <results>/<env>/<algo>/seed<k>/ (folders moved aside as
seed<k>.incomplete-* are ignored), including runs still in progress, which are
reported at their current step and marked as such. Runs that run.py trained
with --tag (in <env>/<algo>+<tag>/) are a separate row labelled "tuned", next
to the default row, with the settings in which they differ from it.

Final score: the mean raw return of the last 100 training episodes, CleanRL's
metric (fewer episodes if the run had fewer, which the table says), then mean
and standard deviation over seeds. It is compared with published numbers at 1M
steps (the ANCHORS below): PPO-clip and PPO-penalty with the PPO columns, TRPO
with the TRPO columns.

It opens with a summary: per env with anchors, each script's training score
and deterministic evaluation side by side with its family's best anchor on each
metric, bold where the cell reaches it; then, over the PPO paper's seven MuJoCo
tasks, each script's mean beside Baselines' and the paper's Table 1 question:
the average normalized score (random policy 0, from benchmarks/random_policy.py;
best setting 1) of clipping, the KL penalty, no clipping (ppo_clip.py --no-clip,
run with run.py --tag noclip) and TRPO.

With --into BENCHMARKS.md the same tables and plot also replace the part of
that file between the lines BEGIN_MARKER and END_MARKER (below), headings one
level down and the plot's path relative to that file, so the hand-written rest
of it (machine, commands, analysis) stays as it is. A file with the lines
SUMMARY_BEGIN and SUMMARY_END gets the summary table there (README.md), and
then not a second time in its report part.

Plotting needs matplotlib (a dependency of this report only, not of the three
scripts); --no-plots writes the table alone.
"""

import argparse
import csv
import importlib
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: find benchmarks/
from benchmarks.solved import first_solved_step  # noqa: E402

FINAL_EPISODES = 100  # CleanRL's final score: mean return of the last 100 training episodes
CURVE_WINDOW = 20  # learning curves: mean of the last 20 episodes, as progress.csv's return_mean
CURVE_POINTS = 200  # points of the common step grid the seeds are interpolated onto
ALGORITHM_ORDER = ["ppo_clip", "ppo_penalty", "trpo"]
FAMILY = {"ppo_clip": "PPO", "ppo_penalty": "PPO", "trpo": "TRPO"}  # which anchors a script is held to
TAG_SEPARATOR = "+"  # run.py --tag: <algo>+<tag>/ holds runs with non-default settings
# Settings that differ between runs of one row by design, not tuning.
PER_RUN_SETTINGS = {"seed", "total_timesteps"}

# Classic control: (threshold, window, where the threshold comes from). A run is
# solved at the first step where the mean raw return of `window` consecutive
# training episodes reaches the threshold (benchmarks/solved.py).
SOLVED = {
    "CartPole-v1": (475.0, 20, "Gymnasium's reward_threshold"),
    "Acrobot-v1": (-100.0, 20, "Gymnasium's reward_threshold"),
    "Pendulum-v1": (-200.0, 20, "our choice: Pendulum-v1 has no official threshold"),
}

# Published final scores at 1M steps, each on its own metric: "train" is the mean
# return of the last 100 training episodes (our final score), "eval" a
# deterministic evaluation of the final model (our benchmarks/evaluate.py
# column). A cell is compared only with anchors of its own metric.
# (source key, label, mean, std over seeds or None, metric, note).
METRICS = {"train": "training score", "eval": "deterministic evaluation"}
SOURCES = {
    "cleanrl": "CleanRL, `docs/benchmark/ppo_continuous_action.md` (github.com/vwxyzjn/cleanrl)",
    "baselines": "OpenAI Baselines, `benchmarks_mujoco1M.htm` (github.com/openai/baselines)",
    "sb3-contrib": "sb3-contrib, `docs/modules/trpo.rst` (github.com/Stable-Baselines-Team/stable-baselines3-contrib); "
                   "its ± is the standard error over the 3 seeds, std / √3, as the RL Zoo's "
                   "`rl_zoo3/plots/all_plots.py` prints it",
    "ppo-paper": "the PPO paper (Schulman et al. 2017), Figure 3: its PPO-clip (ε = 0.2) and TRPO "
                 "curves at 1M steps, gym's MuJoCo tasks of 2017 (v1), 3 seeds; the paper prints no "
                 "numbers, so these are approximate, as read from the plot by Tianshou "
                 "(`examples/mujoco/README.md`, github.com/thu-ml/tianshou, its PPO and TRPO tables)",
    "here": "measured on this project's machine: Stable-Baselines3 2.9.2 PPO with its defaults plus "
            "VecNormalize (observations and rewards), Hopper-v5, 1M steps, seeds 1–3, both metrics "
            "(`benchmarks/sb3_ppo.py`, runs in `benchmarks/anchors/sb3_ppo/`); an earlier single "
            "seed, not reproducible from this repository, scored 2,754",
}


def figure_3(score):
    """An anchor read from the PPO paper's Figure 3 (SOURCES["ppo-paper"]): approximate."""
    return ("ppo-paper", "PPO paper Fig. 3, read from a plot:", score, None, "train", "v1, 3 seeds")


ANCHORS = {
    "Hopper-v5": {
        "PPO": [("cleanrl", "CleanRL PPO", 2383, 272, "train", "v4, 3 seeds"),
                ("baselines", "Baselines ppo2", 2316, None, "train", "6 seeds"),
                ("here", "SB3 PPO", 2728, 151, "train", "v5, 3 seeds, this machine"),
                ("here", "SB3 PPO", 3559, 167, "eval", "v5, 3 seeds, this machine"),
                figure_3(2330)],
        "TRPO": [("sb3-contrib", "sb3-contrib TRPO", 3372, 215, "eval", "v3, 3 seeds"),
                 ("baselines", "Baselines trpo_mpi", 1913, None, "train", "6 seeds"),
                 figure_3(2100)],
    },
    "Walker2d-v5": {
        "PPO": [("cleanrl", "CleanRL PPO", 2288, 572, "train", "v4, 3 seeds"),
                ("baselines", "Baselines ppo2", 3425, None, "train", "6 seeds"),
                figure_3(3460)],
        "TRPO": [("sb3-contrib", "sb3-contrib TRPO", 4502, 234, "eval", "v3, 3 seeds"),
                 ("baselines", "Baselines trpo_mpi", 2343, None, "train", "6 seeds"),
                 figure_3(1100)],
    },
    "HalfCheetah-v5": {
        "PPO": [("cleanrl", "CleanRL PPO", 1443, 46, "train", "v4, 3 seeds"),
                ("baselines", "Baselines ppo2", 1669, None, "train", "6 seeds"),
                figure_3(1800)],
        "TRPO": [("sb3-contrib", "sb3-contrib TRPO", 1803, 46, "eval", "v3, 3 seeds"),
                 ("baselines", "Baselines trpo_mpi", 1290, None, "train", "6 seeds"),
                 figure_3(0)],
    },
    "InvertedPendulum-v5": {
        "PPO": [("cleanrl", "CleanRL PPO", 963, 22, "train", "v4, 3 seeds"),
                ("baselines", "Baselines ppo2", 809.43, None, "train", "6 seeds"),
                figure_3(1000)],
        "TRPO": [("baselines", "Baselines trpo_mpi", 905.1, None, "train", "6 seeds"),
                 figure_3(1000)],
    },
    "InvertedDoublePendulum-v5": {
        "PPO": [("baselines", "Baselines ppo2", 7102.91, None, "train", "6 seeds"),
                figure_3(8000)],
        "TRPO": [("baselines", "Baselines trpo_mpi", 6731.63, None, "train", "6 seeds"),
                 figure_3(200)],
    },
    "Reacher-v5": {
        "PPO": [("baselines", "Baselines ppo2", -6.71, None, "train", "6 seeds"),
                figure_3(-7)],
        "TRPO": [("baselines", "Baselines trpo_mpi", -4.82, None, "train", "6 seeds"),
                 figure_3(-115)],
    },
    "Swimmer-v5": {
        "PPO": [("baselines", "Baselines ppo2", 111.19, None, "train", "6 seeds"),
                figure_3(108)],
        "TRPO": [("baselines", "Baselines trpo_mpi", 94.96, None, "train", "6 seeds"),
                 figure_3(121)],
    },
}

# How v5 differs from the versions the anchors ran (v1 in the PPO paper, v2 in Baselines, v3
# in sb3-contrib, v4 in CleanRL) and which way that likely moves the comparison, from the
# "Version History" of Gymnasium's own environment files (gymnasium/envs/mujoco/*_v5.py).
VERSION_NOTES = {
    "Hopper-v5": "v5 no longer pays the healthy reward on the step that ends an episode (1 point "
                 "per episode): about even.",
    "Walker2d-v5": "v5 gives the right foot the left foot's friction (1.9, was 0.9), so it slides "
                   "less and needs more force to move, and no longer pays the healthy reward on the "
                   "step that ends an episode: the direction is unknown and may be material.",
    "HalfCheetah-v5": "no change to the model or the reward since v2, only the simulator's version: "
                      "about even.",
    "InvertedPendulum-v5": "v5 pays 0, not 1, for the step on which the pole falls: at most 1 point "
                           "lower per episode (an episode that never falls still scores 1,000).",
    "InvertedDoublePendulum-v5": "v5 no longer pays the alive bonus (10) on the step on which the "
                                 "pendulum falls, and drops an always-zero observation: up to 10 "
                                 "points lower per episode, against scores in the thousands.",
    "Reacher-v5": "v5 takes the distance reward after the physics step, not before it: each "
                  "episode's sum counts the last distance instead of the first, so a policy that "
                  "reaches the target scores higher by about the distance it closed (about 0.2 "
                  "against scores near −5).",
    "Swimmer-v5": "no change to the model or the reward since v2: about even. (The RL Zoo's "
                  "Swimmer scores use γ = 0.9999 and are not comparable with γ = 0.99.)",
}

# The PPO paper's seven MuJoCo tasks (Figure 3, Table 1), and what they are compared with.
PPO_PAPER_TASKS = ["HalfCheetah-v5", "Hopper-v5", "InvertedDoublePendulum-v5", "InvertedPendulum-v5",
                   "Reacher-v5", "Swimmer-v5", "Walker2d-v5"]
SEVEN_TASK_MEANS = [("Baselines ppo2", 2203.79), ("Baselines trpo_mpi", 1896.01)]  # benchmarks_mujoco1M
# Table 1 of the PPO paper: average normalized score (random policy 0, best setting 1) over
# 7 tasks x 3 seeds, and the row here that asks the same question (None: not run here).
TABLE_1 = [("no clipping or penalty", -0.39, "ppo_clip+noclip"),
           ("clipping, ε = 0.2", 0.82, "ppo_clip"),
           ("adaptive KL, d_targ = 0.01 (here with its KL hinge)", 0.74, "ppo_penalty"),
           ("fixed KL, β = 1", 0.71, None),
           ("TRPO (not in Table 1; normalized on the same scale)", None, "trpo")]
# The rows that are the paper's settings, run here: between them they define each task's 1.
PAPER_ROWS = [row for _, paper, row in TABLE_1 if paper is not None and row is not None]
RANDOM_SCORES = Path(__file__).resolve().parent / "anchors" / "random_policy.json"


# --into: the generated parts of a hand-written Markdown file lie between these lines:
# the whole report between BEGIN_MARKER and END_MARKER, the summary table alone
# (for a short page such as the README) between SUMMARY_BEGIN and SUMMARY_END.
BEGIN_MARKER = "<!-- begin: written by benchmarks/report.py, do not edit by hand -->"
END_MARKER = "<!-- end: written by benchmarks/report.py -->"
SUMMARY_BEGIN = "<!-- begin: summary written by benchmarks/report.py, do not edit by hand -->"
SUMMARY_END = "<!-- end: summary written by benchmarks/report.py -->"


class UsageError(Exception):
    """Bad input: one line on stderr and exit status 2."""


# ----------------------------------------------------------------------------------
# Reading one run
# ----------------------------------------------------------------------------------
def read_rows(path):
    try:
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    except FileNotFoundError:
        return []


def read_run(run_dir):
    """Everything the report needs from one run directory, or None if it holds no config.json."""
    try:
        config = json.loads((run_dir / "config.json").read_text())
        settings = config["settings"]
    except (OSError, ValueError, KeyError):
        return None
    batch = settings["num_envs"] * settings["num_steps"]
    # A resumed run has already dropped any rows logged after its checkpoint, so
    # both files hold one timeline.
    episodes = read_rows(run_dir / "episodes.csv")
    progress = read_rows(run_dir / "progress.csv")
    step = int(progress[-1]["global_step"]) if progress else 0
    target = settings["total_timesteps"] // batch * batch  # the scripts round the budget down
    try:  # benchmarks/evaluate.py's deterministic evaluation, if it scored this checkpoint
        evaluation = json.loads((run_dir / "eval.json").read_text())
    except (OSError, ValueError):
        evaluation = None
    return {
        "algorithm": config.get("algorithm", run_dir.parent.name.partition(TAG_SEPARATOR)[0]),
        "settings": settings,
        "seed": settings["seed"],
        "step": step,
        "target": target,
        "in_progress": step < target,
        "episodes": [(int(r["global_step"]), float(r["return"])) for r in episodes],
        "eval": evaluation["mean"] if evaluation and evaluation["model_step"] == step else None,
        # PPO-penalty's adaptive beta and the KL it steers, per update (empty for the others).
        "beta": [(int(r["global_step"]), float(r["beta"]), float(r["kl"]))
                 for r in progress if r.get("beta")],
    }


def collect(results):
    """{env: {row: [run, ...]}} from <results>/<env>/<row>/seed<k>/, where a row is
    an algorithm (its default settings) or <algo>+<tag> (run.py --tag)."""
    table = {}
    for run_dir in sorted(results.glob("*/*/seed*")):
        if not run_dir.is_dir() or not run_dir.name[len("seed"):].isdigit():
            continue  # seed<k>.log, seed<k>.incomplete-<time>
        run = read_run(run_dir)
        if run is not None:
            table.setdefault(run_dir.parent.parent.name, {}).setdefault(run_dir.parent.name, []).append(run)
    for algos in table.values():
        for runs in algos.values():
            runs.sort(key=lambda run: run["seed"])
    return table


def final_score(run):
    """(mean raw return of the last FINAL_EPISODES episodes, episodes averaged), or (nan, 0)."""
    returns = [ret for _, ret in run["episodes"][-FINAL_EPISODES:]]
    return (float(np.mean(returns)) if returns else math.nan), len(returns)


# ----------------------------------------------------------------------------------
# The Markdown table
# ----------------------------------------------------------------------------------
def ordered(names, order):
    """`names` in the order of `order`, a tuned row <algo>+<tag> right after its algorithm's row."""
    def key(name):
        base, _, tag = name.partition(TAG_SEPARATOR)
        return (order.index(base) if base in order else len(order), base, tag)
    return sorted(names, key=key)


def flag(name, value):
    """A setting as the command-line flag that sets it: num_envs 2 -> `--num-envs 2`."""
    option = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return option if value else "--no-" + option[2:]
    if isinstance(value, list):
        return f"{option} {' '.join(map(str, value))}"
    return f"{option} {value}"


def script_defaults(algorithm, env):
    """The settings a run of `algorithm` on `env` gets from its script when no flag is typed."""
    return vars(importlib.import_module(algorithm).parse_args(["--env", env]))


def row_label(row, runs, algos):
    """`algo` for the default row; for a tuned row also the flags that set it apart
    from the default row of the same env (read from the runs' config.json)."""
    algorithm = runs[0]["algorithm"]
    if row == algorithm:
        return f"`{algorithm}`"
    tag = row.partition(TAG_SEPARATOR)[2]
    if algorithm not in algos:
        return f"`{algorithm}` **tuned** ({tag}; no default row to compare with)"
    tuned = runs[0]["settings"]
    # Under the default run's settings, the script's: a default run made before a flag
    # existed lacks it, and ran with the value the script gives it when not typed.
    default = {**script_defaults(algorithm, tuned["env"]), **algos[algorithm][0]["settings"]}
    changed = [flag(name, tuned[name]) for name in tuned
               if name not in PER_RUN_SETTINGS and tuned[name] != default.get(name)]
    return f"`{algorithm}` **tuned** ({tag}): " + (" ".join(f"`{c}`" for c in changed) or "same settings")


def env_order():
    return list(SOLVED) + list(ANCHORS)


def fmt(x):
    """Returns are printed with one decimal under 100 in size, as integers above."""
    if math.isnan(x):
        return "n/a"
    return f"{x:,.1f}" if abs(x) < 100 else f"{x:,.0f}"


def seed_cell(run, score, count):
    notes = []
    if run["in_progress"]:
        notes.append(f"in progress at {run['step']:,}/{run['target']:,}")
    if count < FINAL_EPISODES:
        notes.append(f"{count} episodes")
    return f"s{run['seed']}: {fmt(score)}" + (f" ({', '.join(notes)})" if notes else "")


def eval_cell(runs):
    """Mean ± std over the seeds that benchmarks/evaluate.py scored, and how many they are."""
    scores = [run["eval"] for run in runs if run["eval"] is not None]
    if not scores:
        return "not evaluated"
    return f"{fmt(np.mean(scores))} ± {fmt(np.std(scores))} ({len(scores)}/{len(runs)} seeds)"


def solved_cell(env, runs):
    threshold, window, _ = SOLVED[env]
    steps = [first_solved_step(run["episodes"], threshold, window) for run in runs]
    reached = sorted(s for s in steps if s is not None)
    # Unsolved runs count as infinitely slow, so the median is "not solved" once half are.
    median = float(np.median([math.inf if s is None else s for s in steps]))
    text = "not solved" if math.isinf(median) else f"{median:,.0f}"
    return f"{text} ({len(reached)}/{len(runs)} solved)"


# Sources whose ± is the standard error of the mean over seeds rather than their std.
STANDARD_ERROR = {"sb3-contrib"}
# Sources whose numbers are read from a plot: shown with "~", and never the bar a cell must reach.
APPROXIMATE = {"ppo-paper"}


def anchor_text(anchor, with_note=False):
    """CleanRL PPO 2,383 ± 272 (train; v4, 3 seeds): an anchor with its metric."""
    source, label, mean, std, metric, note = anchor
    spread = " s.e." if source in STANDARD_ERROR else ""
    score = ("~" if source in APPROXIMATE else "") + fmt(mean) + (f" ± {fmt(std)}{spread}" if std is not None else "")
    return f"{label} {score} ({metric}" + (f"; {note})" if with_note else ")")


def best_anchor(env, algorithm, metric):
    """The highest published score on `metric` for `algorithm`'s family on `env`, read from a
    table rather than a plot: the number a cell must reach to count as met (None if no anchor
    reports that metric)."""
    family = ANCHORS.get(env, {}).get(FAMILY.get(algorithm), [])
    printed = [a for a in family if a[4] == metric and a[0] not in APPROXIMATE]
    return max(printed, key=lambda a: a[2], default=None)


def summary_cell(env, algorithm, runs):
    """`train / eval` mean ± std over the finished runs, each bold where it reaches the
    best anchor on the same metric."""
    scores = {"train": [final_score(run)[0] for run in runs],
              "eval": [run["eval"] for run in runs if run["eval"] is not None]}
    parts = []
    for metric, values in scores.items():
        if not values:
            parts.append("n/a")
            continue
        text = fmt(np.mean(values)) + (f" ± {fmt(np.std(values))}" if len(values) > 1 else "")
        best = best_anchor(env, algorithm, metric)
        parts.append(f"**{text}**" if best is not None and np.mean(values) >= best[2] else text)
    return " / ".join(parts)


def summary_section(table, random_scores=None):
    """One row per env with anchors: each script's default row side by side with the
    best anchor of its family on each metric. Runs still training are left out. Then,
    if any of them ran, the PPO paper's seven tasks (seven_task_section), normalized
    with `random_scores` (default: those of benchmarks/random_policy.py)."""
    if random_scores is None:
        random_scores = json.loads(RANDOM_SCORES.read_text()) if RANDOM_SCORES.exists() else {}
    seven = []
    if any(task in table for task in PPO_PAPER_TASKS):
        seven = ["", "**The PPO paper's seven MuJoCo tasks** (its Figure 3; 1M steps):", ""]
        seven += seven_task_section(table, random_scores)
    algorithms = [a for a in ALGORITHM_ORDER if any(a in table.get(env, {}) for env in ANCHORS)]
    envs = [env for env in ANCHORS if any(a in table.get(env, {}) for a in algorithms)]
    if not envs:
        return []
    columns = []  # each script, and after the last script of a family that family's anchors
    for k, algorithm in enumerate(algorithms):
        columns.append(("script", algorithm))
        if k + 1 == len(algorithms) or FAMILY[algorithms[k + 1]] != FAMILY[algorithm]:
            columns.append(("anchors", algorithm))
    header = ["env", "seeds"] + [f"`{algorithm}` train / eval" if kind == "script"
                                 else f"{FAMILY[algorithm]} anchors" for kind, algorithm in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for env in envs:
        finished = {a: [run for run in table[env].get(a, []) if not run["in_progress"]] for a in algorithms}
        cells = [env, "/".join(str(len(finished[a])) for a in algorithms)]
        for kind, algorithm in columns:
            if kind == "script":
                cells.append(summary_cell(env, algorithm, finished[algorithm]) if finished[algorithm] else "—")
            else:
                best = [best_anchor(env, algorithm, metric) for metric in METRICS]
                cells.append("; ".join(anchor_text(a) for a in best if a is not None) or "none")
        lines.append("| " + " | ".join(cells) + " |")
    return lines + ["", f"`seeds`: finished runs of {' / '.join(algorithms)}. Each cell is the training score "
                    f"(mean of the last {FINAL_EPISODES} training episodes) / the deterministic evaluation "
                    "(benchmarks/evaluate.py), mean ± std over seeds; **bold**: at or above the family's "
                    "best anchor on the same metric."] + seven


def task_means(table, row):
    """{task: mean training score over the finished runs of `row`} for the PPO paper's tasks."""
    means = {}
    for task in PPO_PAPER_TASKS:
        scores = [final_score(run)[0] for run in table.get(task, {}).get(row, []) if not run["in_progress"]]
        if scores:
            means[task] = float(np.mean(scores))
    return means


def table_1_best(means):
    """Table 1's 1 per task: the best mean over seeds among the paper's settings run here.
    `means` is {row: task_means(table, row)} and must hold those rows on every task."""
    return {task: max(means[row][task] for row in PAPER_ROWS) for task in PPO_PAPER_TASKS}


def normalized_scores(table, row, best, random_scores):
    """{task: the finished runs of `row`, each on the paper's scale}: random policy 0, best 1."""
    return {task: [(final_score(run)[0] - random_scores[task]["mean"])
                   / (best[task] - random_scores[task]["mean"])
                   for run in table[task][row] if not run["in_progress"]]
            for task in PPO_PAPER_TASKS}


def seven_task_section(table, random_scores):
    """The mean over the PPO paper's seven tasks per script, beside Baselines', and Table 1's
    average normalized score, once every row involved has finished runs on all seven."""
    rows = [*ALGORITHM_ORDER, "ppo_clip+noclip"]
    means = {row: task_means(table, row) for row in rows}
    lines = ["| script | tasks with finished runs | mean over the seven tasks (training score) |",
             "|---|---|---|"]
    for row in rows:
        done = len(means[row])
        mean = fmt(np.mean(list(means[row].values()))) if done == len(PPO_PAPER_TASKS) else "—"
        lines.append(f"| `{row}` | {done}/{len(PPO_PAPER_TASKS)} | {mean} |")
    lines += [f"| {label} (v2, 6 seeds) | 7/7 | {fmt(value)} |" for label, value in SEVEN_TASK_MEANS]
    complete = [row for row in rows if len(means[row]) == len(PPO_PAPER_TASKS)]
    waiting = [row for row in PAPER_ROWS if row not in complete]
    missing = [task for task in PPO_PAPER_TASKS if task not in random_scores]
    lines += ["", "**Table 1's question** (average normalized score over the seven tasks × seeds):", ""]
    if waiting or missing:
        return lines + ["Not yet computed: waiting for " + " and ".join(
            ([f"finished runs of {', '.join(waiting)} on all seven tasks"] if waiting else [])
            + ([f"random-policy scores of {', '.join(missing)}"] if missing else [])) + "."]
    best = table_1_best(means)
    lines += ["| setting | PPO paper | here |", "|---|---|---|"]
    for label, paper, row in TABLE_1:
        here = "not run"
        if row in complete:
            # Each task weighs the same whatever its number of seeds: the mean over its runs,
            # then the mean over the tasks (with 3 seeds each, the paper's mean over 21 runs).
            per_task = normalized_scores(table, row, best, random_scores).values()
            runs = sum(len(scores) for scores in per_task)
            here = f"{np.mean([np.mean(scores) for scores in per_task]):.2f} ({runs} runs)"
        lines.append(f"| {label} | {'—' if paper is None else f'{paper:.2f}'} | {here} |")
    return lines + ["", "0 is the mean return of uniformly random actions (`benchmarks/random_policy.py`, "
                    "100 episodes per task); 1 is, per task, the best mean over seeds among the paper's "
                    "settings run here; each run is normalized, each task's runs averaged, then the seven tasks "
                    "(the paper's mean over its 7 × 3 runs, when every task has the same number of seeds)."]


def env_section(env, algos):
    lines = [f"## {env}", ""]
    solved = env in SOLVED
    anchors = ANCHORS.get(env, {})
    header = ["algorithm", "seeds", "steps", "final score (mean ± std over seeds)", "per seed"]
    evaluated = any(run["eval"] is not None for runs in algos.values() for run in runs)
    if evaluated:
        header.append("final deterministic evaluation (benchmarks/evaluate.py; mean ± std over seeds)")
    if solved:
        threshold, window, origin = SOLVED[env]
        header.append(f"median steps to solve ({threshold:g} over {window} episodes)")
    if anchors:
        header.append("anchors at 1M steps (same algorithm family)")
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in ordered(algos, ALGORITHM_ORDER):
        runs = algos[row]
        scores = [final_score(run) for run in runs]
        values = np.array([s for s, _ in scores])
        steps = sorted({run["step"] for run in runs})
        step_text = f"{steps[0]:,}" if len(steps) == 1 else f"{steps[0]:,}–{steps[-1]:,}"
        if any(run["in_progress"] for run in runs):
            step_text += " (in progress)"
        mean_std = (f"{fmt(np.nanmean(values))} ± {fmt(np.nanstd(values))}"
                    if not np.isnan(values).all() else "no episodes yet")
        cells = [row_label(row, runs, algos), str(len(runs)), step_text, mean_std,
                 "; ".join(seed_cell(run, s, n) for run, (s, n) in zip(runs, scores))]
        if evaluated:
            cells.append(eval_cell(runs))
        if solved:
            cells.append(solved_cell(env, runs))
        if anchors:
            family = anchors.get(FAMILY.get(runs[0]["algorithm"]), [])
            cells.append("; ".join(anchor_text(anchor, with_note=True) for anchor in family) or "none")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if env in VERSION_NOTES:
        lines += [f"Versions against the anchors: {VERSION_NOTES[env]}", ""]
    if solved:
        lines += [f"Solved threshold: {SOLVED[env][0]:g}, mean raw return of {SOLVED[env][1]} consecutive "
                  f"training episodes ({SOLVED[env][2]}).", ""]
    return lines


def markdown(table, results, plot_name, beta_name, summary_lines):
    """results.md: the summary table (`summary_lines`, left out when empty), a table per
    env, the anchors' sources and the plots' links."""
    envs = ordered(table, env_order())
    lines = [
        "# Benchmark results", "",
        f"Generated by `benchmarks/report.py` from `{results}` on {time.strftime('%Y-%m-%d %H:%M')}.", "",
        f"**Final score**: the mean raw return of the last {FINAL_EPISODES} training episodes of a run "
        "(CleanRL's metric; fewer where the run had fewer, noted per seed), then mean ± standard "
        "deviation over seeds (population std, ddof = 0). Training episodes are played with the "
        "stochastic policy. `per seed` gives each seed's score; runs still training are marked "
        "`in progress` with their current step. Every script runs with its default settings; a "
        "row marked **tuned** ran with the settings listed beside it, next to the default row.", "",
    ]
    if summary_lines:
        lines += ["## Summary against the anchors", ""] + summary_lines + [""]
    for env in envs:
        lines += env_section(env, table[env])
    if any(env in ANCHORS for env in envs):
        lines += ["## Sources of the anchors", "",
                  "PPO-clip and PPO-penalty are compared with the PPO anchors, TRPO with the TRPO "
                  "anchors. The published runs used older versions of the environments (CleanRL "
                  "v4, sb3-contrib v3, Baselines those of its time) and of MuJoCo, whose dynamics and "
                  "rewards differ slightly from v5: read the comparison as a sanity check, not a "
                  "ranking.", ""]
        lines += [f"- {text}" for text in SOURCES.values()]
        lines.append("")
    if plot_name:
        lines += ["## Learning curves", "",
                  f"Mean of the last {CURVE_WINDOW} training episodes against environment steps; "
                  "line: mean over seeds, band: ± 1 std over seeds.", "",
                  f"![learning curves]({plot_name})", ""]
    if beta_name:
        lines += ["## PPO-penalty's adaptive β", "",
                  "β after each update (log scale, one line per seed) and the KL(π_old ‖ π) it "
                  "steers, measured after the update on the whole batch. β halves when the KL "
                  "ends below d_targ / 1.5 and doubles above d_targ × 1.5 (the shaded band; PPO "
                  "paper section 4). A β that keeps halving while the KL stays far below the "
                  "band has stopped meaning anything.", "",
                  f"![beta]({beta_name})", ""]
    return "\n".join(lines)


def read_target(target):
    """The text of an --into file, checked to hold the report's or the summary's marker
    pair, or both, each marker once and each pair in order."""
    try:
        text = target.read_text()
    except OSError as error:
        raise UsageError(f"--into {target}: {error.strerror}") from None
    pairs = [(BEGIN_MARKER, END_MARKER), (SUMMARY_BEGIN, SUMMARY_END)]
    for begin, end in pairs:
        if (begin in text or end in text) and (
                text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end)):
            raise UsageError(f"--into {target}: needs the lines '{begin}' and '{end}' once each, in this order")
    if not any(begin in text for begin, _ in pairs):
        raise UsageError(f"--into {target}: needs the lines '{BEGIN_MARKER}' and '{END_MARKER}' (the report) "
                         f"or '{SUMMARY_BEGIN}' and '{SUMMARY_END}' (the summary table)")
    return text


def replace_between(text, begin, end, body):
    head, rest = text.split(begin)
    return f"{head}{begin}\n{body.strip()}\n{end}{rest.split(end)[1]}"


def embed(target, report_md, lean_report_md, summary_md, plot_paths):
    """Replace the generated parts of `target`: the summary table between its summary
    markers; the report between BEGIN_MARKER and END_MARKER, without its title,
    headings one level down, the plots linked relative to `target`, and without the
    summary (`lean_report_md`) where the summary markers already show it. Writes
    through a temporary file, so an error never leaves `target` half written."""
    text = read_target(target)
    if SUMMARY_BEGIN in text:
        text = replace_between(text, SUMMARY_BEGIN, SUMMARY_END, summary_md)
        report_md = lean_report_md
    if BEGIN_MARKER in text:
        body = report_md.split("\n", 1)[1]  # drop "# Benchmark results": the target has its own title
        body = "\n".join("#" + line if line.startswith("#") else line for line in body.splitlines())
        for plot_path in plot_paths:
            relative = Path(os.path.relpath(plot_path.resolve(), target.resolve().parent)).as_posix()
            body = body.replace(f"]({plot_path.name})", f"]({relative})")
        text = replace_between(text, BEGIN_MARKER, END_MARKER, body)
    temporary = target.with_name(target.name + ".tmp")
    temporary.write_text(text)
    temporary.replace(target)


# ----------------------------------------------------------------------------------
# Learning curves
# ----------------------------------------------------------------------------------
def curve(run, grid):
    """The run's mean return over its last CURVE_WINDOW episodes, as a function of
    the step at which each episode ended, on `grid`; NaN before the first episode
    and after the run's current step."""
    if not run["episodes"]:
        return np.full(len(grid), np.nan)
    steps = np.array([s for s, _ in run["episodes"]], dtype=float)  # (E,)
    returns = np.array([r for _, r in run["episodes"]])  # (E,)
    cumsum = np.concatenate([[0.0], np.cumsum(returns)])  # (E + 1,)
    start = np.maximum(np.arange(1, len(returns) + 1) - CURVE_WINDOW, 0)  # (E,) first episode of each window
    smoothed = (cumsum[1:] - cumsum[start]) / (np.arange(1, len(returns) + 1) - start)  # (E,)
    values = np.interp(grid, steps, smoothed, left=np.nan)  # (G,) held flat after the last episode
    values[grid > run["step"]] = np.nan
    return values


def mean_and_std(curves):
    """Mean and std over seeds (rows) of the columns that have at least one value."""
    curves = np.asarray(curves)  # (seeds, G)
    valid = ~np.isnan(curves)
    count = valid.sum(0)  # (G,)
    filled = np.where(valid, curves, 0.0)
    mean = filled.sum(0) / np.maximum(count, 1)
    std = np.sqrt((np.where(valid, curves - mean, 0.0) ** 2).sum(0) / np.maximum(count, 1))
    mean[count == 0] = np.nan
    std[count == 0] = np.nan
    return mean, std


def short_number(x, _position=None):
    """Axis labels like 50k and 1M, which do not run into each other."""
    for limit, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(x) >= limit:
            return f"{x / limit:g}{suffix}"
    return f"{x:g}"


def plot(table, path):
    import matplotlib  # only here: the report's one optional dependency

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    # An env whose runs have not finished an episode yet has nothing to draw.
    envs = [env for env in ordered(table, env_order())
            if any(run["episodes"] for runs in table[env].values() for run in runs)]
    if not envs:
        return
    cols = min(3, len(envs))
    rows = math.ceil(len(envs) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    for ax, env in zip(axes.flat, envs):
        algos = table[env]
        last = max(run["step"] for runs in algos.values() for run in runs)
        grid = np.linspace(0, max(last, 1), CURVE_POINTS)  # (G,)
        for row in ordered(algos, ALGORITHM_ORDER):
            mean, std = mean_and_std([curve(run, grid) for run in algos[row]])
            runs = algos[row]
            training = sum(run["in_progress"] for run in runs)
            tuned = row != runs[0]["algorithm"]
            name = f"{runs[0]['algorithm']} tuned ({row.partition(TAG_SEPARATOR)[2]})" if tuned else row
            label = f"{name} ({len(runs)} seed{'s' if len(runs) > 1 else ''}" + (
                f", {training} in progress)" if training else ")")
            # One colour per algorithm, the same in every panel; a tuned row takes its
            # algorithm's colour, dashed, so the default settings stay the eye's first read.
            base = runs[0]["algorithm"]
            color = f"C{ALGORITHM_ORDER.index(base) if base in ALGORITHM_ORDER else len(ALGORITHM_ORDER)}"
            (line,) = ax.plot(grid, mean, label=label, color=color, linestyle="--" if tuned else "-")
            ax.fill_between(grid, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set_title(env)
        ax.set_xlabel("environment steps")
        ax.xaxis.set_major_formatter(plt.FuncFormatter(short_number))
        ax.set_ylabel(f"return (last {CURVE_WINDOW} episodes)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    for ax in list(axes.flat)[len(envs):]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def penalty_runs(table):
    """{env: default-settings ppo_penalty runs that logged beta}, envs in report order."""
    envs = ordered(table, env_order())
    found = {env: [run for run in table[env].get("ppo_penalty", []) if run["beta"]] for env in envs}
    return {env: runs for env, runs in found.items() if runs}


def plot_beta(table, path):
    """PPO-penalty's beta (top row, log scale) and measured KL with the band in which beta
    stays put (bottom row), per env, one line per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs_by_env = penalty_runs(table)
    cols = min(3, len(runs_by_env))
    rows = math.ceil(len(runs_by_env) / cols)
    # Each env is a column of two panels: beta above, the KL below, on the same steps.
    fig, axes = plt.subplots(2 * rows, cols, figsize=(5 * cols, 5.2 * rows), squeeze=False)
    for i, (env, runs) in enumerate(runs_by_env.items()):
        top, bottom = axes[2 * (i // cols), i % cols], axes[2 * (i // cols) + 1, i % cols]
        for run in runs:
            steps, beta, kl = np.array(run["beta"]).T  # (U,) each
            top.plot(steps, beta, linewidth=0.8, label=f"seed {run['seed']}")
            bottom.plot(steps, kl, linewidth=0.6)
        target = runs[0]["settings"]["kl_target"]
        bottom.axhspan(target / 1.5, target * 1.5, color="grey", alpha=0.25, linewidth=0)
        top.set_title(env)
        top.set_yscale("log")
        bottom.set_yscale("log")
        top.set_ylabel("beta")
        bottom.set_ylabel("KL(pi_old || pi)")
        bottom.set_xlabel("environment steps")
        for ax in (top, bottom):
            ax.xaxis.set_major_formatter(plt.FuncFormatter(short_number))
            ax.grid(alpha=0.3)
        top.legend(fontsize="x-small")
    for ax in list(axes.flat):
        ax.set_visible(bool(ax.lines))  # the empty panels of a last, incomplete row
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------
class OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser():
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, help="results folder written by benchmarks/run.py")
    parser.add_argument("--out", type=Path, default=Path("report"),
                        help="folder for results.md and the plot (default: %(default)s)")
    parser.add_argument("--plot-name", default="learning_curves.png",
                        help="file name of the plot in --out (default: %(default)s)")
    parser.add_argument("--beta-plot-name", default="beta.png",
                        help="file name of the plot of PPO-penalty's beta in --out, drawn when "
                             "ppo_penalty runs are present (default: %(default)s)")
    parser.add_argument("--into", type=Path, nargs="+", default=[], metavar="MARKDOWN",
                        help="also write into these files, between their marker lines: the whole report "
                             "(tables and plot links, e.g. BENCHMARKS.md) and/or the summary table alone "
                             "(e.g. README.md); see BEGIN_MARKER and SUMMARY_BEGIN (default: none)")
    parser.add_argument("--no-plots", action="store_true",
                        help="write results.md only, without matplotlib (default: plots on)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    prog = Path(sys.argv[0]).name
    try:
        if not args.results.is_dir():
            raise UsageError(f"results folder {args.results} does not exist")
        table = collect(args.results)
        if not table:
            raise UsageError(f"{args.results} holds no run directories (<env>/<algo>/seed<k>/config.json)")
        want_plot = not args.no_plots
        if want_plot:
            try:
                import matplotlib  # noqa: F401
            except ImportError:
                raise UsageError("plots need matplotlib (pip install matplotlib), or pass --no-plots") from None
        for target in args.into:
            read_target(target)  # bad markers are reported before any work is done
        args.out.mkdir(parents=True, exist_ok=True)
        want_beta = want_plot and bool(penalty_runs(table))
        plot_names = (args.plot_name if want_plot else None, args.beta_plot_name if want_beta else None)
        summary = summary_section(table)
        results_md = markdown(table, args.results, *plot_names, summary)
        (args.out / "results.md").write_text(results_md)
        plots = []
        if want_plot:
            plot(table, args.out / args.plot_name)
            plots.append(args.out / args.plot_name)
        if want_beta:
            plot_beta(table, args.out / args.beta_plot_name)
            plots.append(args.out / args.beta_plot_name)
        lean_md = markdown(table, args.results, *plot_names, []) if args.into else None
        for target in args.into:
            embed(target, results_md, lean_md, "\n".join(summary), plots)
    except UsageError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    runs = sum(len(runs) for algos in table.values() for runs in algos.values())
    print(f"{runs} runs in {len(table)} envs: wrote {args.out / 'results.md'}"
          + (f" and {args.out / args.plot_name}" if want_plot else "")
          + (f" and {args.out / args.beta_plot_name}" if want_beta else "")
          + (f", and the tables into {', '.join(map(str, args.into))}" if args.into else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
