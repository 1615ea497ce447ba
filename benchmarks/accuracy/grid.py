"""Screen several training candidates on several data sets and splits at once (`screen.py`
jobs run side by side, e.g. on one GPU), then score them beside the harness's baselines.

    .venv/bin/python benchmarks/accuracy/grid.py grids/ensembles.yaml --data-root DIR \
        --out OUT --parallel 12 --device cuda --budget 330 --limit 520

The grid file names the data sets (harness `--out` dirs under --data-root, whose
`seed_S/runs/NAME/results` hold the windows and `seed_S/metrics.csv` the baselines), the seeds
(splits), the candidates: `set` (screen.py overrides), `members` (an ensemble of that many
runs with seeds S, S + 1000, ...: their cell log-scores are averaged) and `decide` (how cells
are decided from them: `linear_member: expression` averages in the package's linear member,
fitted on the split's training cells (their expression values and gene presence), as the package
does (each side divided by its own validation temperature); `calibrated` the same with the
previous version's member, on gene presence alone; `true` the version before's equal,
uncalibrated average with that member; `logit_adjustment: s` as predict's; candidates differing
only there share their runs), and optionally `order`:
blocks of candidates x data sets, the only jobs run, in that order. Jobs already done are kept;
none starts after --budget seconds, and those running at --limit are stopped. Per data set,
OUT/DATASET/seed_S/metrics.csv holds `ours:CANDIDATE` rows beside the baselines, and
summary.py's tables go to OUT/DATASET, with each candidate against the first in
`versus_first.md`.
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import report
import scipy.sparse as sp
import summary
import yaml

from scgenai_flow.contexts import load_windows
from scgenai_flow.decide import fit_temperature, joint_scores, prior_offsets, softmax_rows
from scgenai_flow.io import InputError
from scgenai_flow.linear import fit_linear, member_features, presence, read_expression
from scgenai_flow.preprocess import EXPRESSION_LAYER, PreprocessSettings, preprocess_file
from scgenai_flow.train import LabelledWindows, linear_member
from scgenai_flow.vocab import Vocabulary

HERE = Path(__file__).resolve().parent
MEMBER_SEED_STEP = 1000


@dataclass(frozen=True)
class Job:
    """One screen.py run: a data set's split, settings and workflow seed."""

    dataset: str
    split: int
    settings: tuple[str, ...]
    seed: int

    def out(self, root: Path) -> Path:
        name = "-".join(s.replace("/", "_") for s in self.settings) or "defaults"
        return root / "runs" / self.dataset / f"split_{self.split}" / f"{name}_seed{self.seed}"


def run_dir(data: Path, split: int) -> Path:
    """The harness run whose results hold the split's windows."""
    runs = sorted(p for p in (data / f"seed_{split}" / "runs").iterdir() if (p / "results").is_dir())
    if not runs:
        raise SystemExit(f"{data}/seed_{split}/runs: no run with results/")
    return runs[0]


def candidate_jobs(grid: dict, dataset: str, split: int, name: str) -> list[Job]:
    """The member runs of one candidate on one split."""
    spec = grid["candidates"][name] or {}
    settings = tuple(f"{k}={v}" for k, v in (spec.get("set") or {}).items())
    members = int(spec.get("members", 1))
    return [Job(dataset, split, settings, split + MEMBER_SEED_STEP * m) for m in range(members)]


def splits_of(args: argparse.Namespace, dataset: str) -> list[int]:
    """The grid's seeds for which the data set has a harness split."""
    data = args.data_root / args.grid["datasets"][dataset]
    return [s for s in args.grid["seeds"] if (data / f"seed_{s}" / "runs").is_dir()]


def all_jobs(args: argparse.Namespace) -> list[Job]:
    """Every distinct job, in the grid's `order` blocks (default: every candidate on every
    data set); member runs shared by candidates run once."""
    grid = args.grid
    blocks = grid.get("order") or [
        {"candidates": list(grid["candidates"]), "datasets": list(grid["datasets"])}
    ]
    jobs = [
        job
        for block in blocks
        for name in block["candidates"]
        for dataset in block["datasets"]
        for split in splits_of(args, dataset)
        for job in candidate_jobs(grid, dataset, split, name)
    ]
    return list(dict.fromkeys(jobs))


def run_jobs(jobs: list[Job], args: argparse.Namespace) -> None:
    """Run the jobs not yet done, `args.parallel` at a time: none started after `args.budget`
    seconds, those still running at `args.limit` stopped."""
    started, running = time.monotonic(), []
    todo = [j for j in jobs if not (j.out(args.out) / "kept.json").exists()]
    try:
        while todo or running:
            elapsed = time.monotonic() - started
            for job, process in running:
                if process.poll() is None and elapsed < args.limit:
                    continue
                process.kill()
                done = (job.out(args.out) / "kept.json").exists()
                print(f"{elapsed:6.0f} s {'done' if done else 'failed'}: {job.out(args.out)}", flush=True)
            running = [(j, p) for j, p in running if p.poll() is None and elapsed < args.limit]
            todo = todo if elapsed < args.budget else []
            while todo and len(running) < args.parallel:
                job = todo.pop(0)
                running.append((job, start(job, args)))
            time.sleep(1)
    finally:
        for _, process in running:
            process.kill()
    print(f"jobs done: {sum((j.out(args.out) / 'kept.json').exists() for j in jobs)} of {len(jobs)}")


def start(job: Job, args: argparse.Namespace) -> subprocess.Popen:
    """Start screen.py for `job`, its output in the job's dir."""
    out = job.out(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run = run_dir(args.data_root / args.grid["datasets"][job.dataset], job.split)
    command = [sys.executable, str(HERE / "screen.py"), str(run), "--seed", str(job.seed), "--out", str(out)]
    command += ["--device", args.device, *(a for s in job.settings for a in ("--set", s))]
    with (out / "screen.log").open("w") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


def candidate_row(
    args: argparse.Namespace, dataset: str, split: int, name: str
) -> tuple[dict, pd.Series] | None:
    """The candidate's metrics row and per-class F1 on one split, None unless all members ran."""
    grid = args.grid
    outs = [j.out(args.out) for j in candidate_jobs(grid, dataset, split, name)]
    if not all((o / "kept.json").exists() for o in outs):
        return None
    scores = [np.load(o / "scores.npz") for o in outs]
    val, test = (np.mean([s[part] for s in scores], axis=0) for part in ("val", "test"))
    decide = (grid["candidates"][name] or {}).get("decide") or {}
    results = run_dir(args.data_root / grid["datasets"][dataset], split) / "results"
    classes = Vocabulary.load(results / "vocab").classes
    linear, network_temperature = {"val": None, "test": None}, 1.0
    kind = decide.get("linear_member")
    if kind:
        linear = linear_log_probs(results, str(kind))
        if kind in ("calibrated", "expression"):
            network_temperature = fit_temperature(val, scores[0]["val_labels"])
    offsets = prior_offsets(
        training_class_cells(results, classes.size), float(decide.get("logit_adjustment", 0))
    )
    # the score temperature is fitted on the validation cells decided as the test cells are (as predict does)
    val, test = (
        joint_scores(part / network_temperature, linear=linear[key], offsets=offsets)
        for key, part in (("val", val), ("test", test))
    )
    temperature = fit_temperature(val, scores[0]["val_labels"])
    label = test.argmax(axis=1)
    result = {
        "predicted": classes[label],
        "score": softmax_rows(test, temperature)[np.arange(label.size), label],
        "train_s": sum(json.loads((o / "kept.json").read_text())["train_s"] for o in outs),
        "predict_s": np.nan,
    }
    return report.score(f"ours:{name}", classes[scores[0]["test_labels"]], result)


@functools.cache
def training_class_cells(results: Path, n_classes: int) -> np.ndarray:
    """Training cells per class of a harness run (read once per run, not per candidate)."""
    return LabelledWindows(*load_windows(results / "contexts" / "train.npz")).class_cells(n_classes)


PART_FILES = {"train": "train", "val": "val", "test": "predict"}  # the harness's parts: the run's files


@functools.cache
def linear_log_probs(results: Path, kind: str) -> dict[str, np.ndarray]:
    """The linear member of a harness run's training cells (`kind`: `expression` as the package
    keeps it, on expression values and gene presence, calibrated on the validation cells;
    `calibrated` the same on presence alone; else presence alone, uncalibrated): its
    validation and test cells' log-probabilities."""
    vocab = Vocabulary.load(results / "vocab")
    parts = {
        p: LabelledWindows(*load_windows(results / "contexts" / f"{f}.npz")) for p, f in PART_FILES.items()
    }
    values = {p: None for p in parts}
    if kind == "expression":
        values = {p: run_expression(results, vocab, p, parts[p].n_cells) for p in parts}

    def log_probs(part: str) -> np.ndarray:
        data = parts[part]
        return member.log_probs(member_features(data.windows, data.n_cells, vocab, values[part]))

    if kind in ("calibrated", "expression"):  # the package's fit also scores the validation cells
        member, val = linear_member(vocab, parts["train"], parts["val"], values["train"], values["val"])
        return {"val": val, "test": log_probs("test")}
    train = parts["train"]
    found = presence(train.windows, train.n_cells, vocab)
    member, _ = fit_linear(found, train.cell_labels, vocab.classes.size)
    return {"val": log_probs("val"), "test": log_probs("test")}


def run_expression(results: Path, vocab: Vocabulary, part: str, n_cells: int) -> sp.csr_matrix:
    """A harness run's normalised values of one part: its preprocessed file's, or for runs of
    versions that did not keep them, its input preprocessed again with the run's vocabulary."""
    preprocessed = results / "preprocessed" / f"{PART_FILES[part]}.h5ad"
    try:
        return read_expression(preprocessed, vocab, n_cells)
    except InputError:
        data = yaml.safe_load((results.parent / "harness.yaml").read_text())["data"]
        settings = PreprocessSettings(num_bins=vocab.num_bins, binning=vocab.binning, use_raw=data["use_raw"])
        redone = preprocess_file(data[PART_FILES[part]], settings, vocab.genes)
        return sp.csr_matrix(redone.layers[EXPRESSION_LAYER])


def write_tables(args: argparse.Namespace) -> None:
    """Per data set: metrics per split beside the baselines, then the summaries."""
    grid = args.grid
    for dataset, data in grid["datasets"].items():
        target = args.out / dataset
        for split in splits_of(args, dataset):
            scored = [candidate_row(args, dataset, split, name) for name in grid["candidates"]]
            scored = [s for s in scored if s is not None]
            if not scored:
                continue
            harness = args.data_root / data / f"seed_{split}"
            base = pd.read_csv(harness / "metrics.csv").query("~method.str.startswith('ours:')")
            per_class = pd.read_csv(harness / "per_class_f1.csv", index_col="class")
            f1 = [f for _, f in scored] + [per_class[m] for m in base["method"] if m in per_class]
            out = target / f"seed_{split}"
            out.mkdir(parents=True, exist_ok=True)
            rows = [r for r, _ in scored] + base.to_dict("records")
            report.write_tables(rows, f1, per_class["test_cells"], out)
        if any(target.glob("seed_*/metrics.csv")):
            print(f"## {dataset}\n\n{summary.write_summary(target)}")
            first = f"ours:{next(iter(grid['candidates']))}"
            versus = summary.paired(summary.collect([target]), versus=first)
            (target / "versus_first.md").write_text(report.markdown(versus.astype(object)))
            print(
                f"each candidate minus {first}, paired by split:\n\n{report.markdown(versus.astype(object))}"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("grid_file", type=Path)
    parser.add_argument("--data-root", type=Path, default=Path("."))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--budget", type=float, default=float("inf"), help="seconds after which no job starts"
    )
    parser.add_argument(
        "--limit", type=float, default=float("inf"), help="seconds after which running jobs stop"
    )
    parser.add_argument("--tables-only", action="store_true", help="score the jobs already done")
    args = parser.parse_args(argv)
    args.grid = yaml.safe_load(args.grid_file.read_text())
    if not args.tables_only:
        run_jobs(all_jobs(args), args)
    write_tables(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
