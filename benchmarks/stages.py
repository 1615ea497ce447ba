"""Time and measure the peak memory of the CPU stages (preprocess, vocabulary, contexts) on one h5ad.

Each stage runs in its own Python process, which reports its own peak RSS (`ru_maxrss` of itself),
so the numbers are per stage. The parent imports only the standard library.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

STAGES = ("preprocess", "vocabulary", "contexts")  # the target counts these (random context)
REFERENCE_OPTION = {"genelist": "genelist.txt", "genomic": "cytobands.tsv", "biofunction": "gene_sets.gmt"}
MARK = "BENCH_RESULT "


def matrix_size(path: Path) -> tuple[int, int, int]:
    """Cells, genes and stored values of an h5ad's sparse X, read without loading it."""
    import h5py

    with h5py.File(path, "r") as handle:
        cells, genes = (int(n) for n in handle["X"].attrs["shape"])
        return cells, genes, int(handle["X/indices"].shape[0])


def run_stage(spec: dict) -> dict:
    """Run one stage in this process (the child side); return what the parent reports."""
    work = Path(spec["workdir"])
    pre, vocab_dir = work / "preprocessed.h5ad", work / "vocab"
    if spec["stage"] == "generate":
        import synthetic  # benchmarks/ is sys.path[0] when this file runs as a script

        imported = time.perf_counter()
        adata = synthetic.make_counts(
            spec["cells"], spec["genes"], spec["nnz_per_cell"], spec["classes"], spec["seed"]
        )
        synthetic.write(adata, Path(spec["h5ad"]))
        return {
            "imported": imported,
            "cells": adata.n_obs,
            "nnz": adata.X.nnz,
            "detail": f"{adata.n_vars} genes",
        }
    from scgenai_flow.contexts import ContextSettings, windows_from_preprocessed, write_vocabulary_dir
    from scgenai_flow.io import write_h5ad
    from scgenai_flow.preprocess import PreprocessSettings, preprocess_file
    from scgenai_flow.vocab import vocabulary_from_preprocessed

    imported = time.perf_counter()
    method = spec.get("method", "random")
    if method != "random":
        vocab_dir = work / f"vocab_{method}"
    if spec["stage"] == "preprocess":
        settings = PreprocessSettings(
            num_bins=spec["num_bins"], min_cells=spec["min_cells"], seed=1314521, use_raw=False
        )
        adata = preprocess_file(spec["h5ad"], settings)
        write_h5ad(adata, pre)
        detail = f"{adata.n_vars} of {matrix_size(Path(spec['h5ad']))[1]} genes kept"
    elif spec["stage"].startswith("vocabulary"):
        vocab = vocabulary_from_preprocessed(pre, spec["target"])
        reference = str(work / REFERENCE_OPTION[method]) if method in REFERENCE_OPTION else None
        write_vocabulary_dir(vocab, method, reference, vocab_dir)
        detail = f"{vocab.size} tokens, {vocab.classes.size} classes"
    elif spec["stage"] == "linear_member":  # the train rule's extra step with model.linear_member
        from scgenai_flow.contexts import load_windows
        from scgenai_flow.linear import fit_linear, member_features, read_expression
        from scgenai_flow.vocab import Vocabulary

        windows, labels = load_windows(work / "contexts_random.npz", mapped=True)
        vocab = Vocabulary.load(vocab_dir)
        cells = member_features(windows, labels.size, vocab, read_expression(pre, vocab, labels.size))
        _, fit = fit_linear(cells, labels, vocab.classes.size)
        detail = f"{cells.nnz:,} member values (expression, presence), {vocab.classes.size} classes;"
        detail += f" {fit.describe()}"
    else:
        settings = ContextSettings(method=method, max_length=spec["max_length"], depth=1, seed=1314521)
        target = work / f"contexts_{method}.npz"
        windows = windows_from_preprocessed(pre, vocab_dir, settings, spec["target"], True, target)
        detail = f"{len(windows)} windows, {target.stat().st_size / 2**20:.0f} MiB npz"
    cells, _, nnz = matrix_size(pre)  # every stage reports the preprocessed matrix it made or read
    return {"imported": imported, "cells": cells, "nnz": nnz, "detail": detail}


def child(spec_json: str, runner=None) -> None:
    """Child process entry: run the stage (`runner`, default `run_stage`), print its result and
    own peak RSS as one marked line."""
    started = time.perf_counter()
    result = (runner or run_stage)(json.loads(spec_json))
    result["import_seconds"] = result.pop("imported") - started
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(MARK + json.dumps(result), flush=True)


def write_references(h5ad: Path, workdir: Path, seed: int) -> None:
    """Synthetic context references over the input's genes: a gene list (every other gene),
    cytobands (25 neighbouring genes per band) and one set of 40 random genes per 50 genes
    (each gene in about 0.8 sets, like MSigDB hallmark sets over a transcriptome)."""
    import random

    import h5py
    from anndata.io import read_elem

    with h5py.File(h5ad, "r") as handle:
        genes = [str(g) for g in read_elem(handle["var"]).index]
    (workdir / REFERENCE_OPTION["genelist"]).write_text("\n".join(genes[::2]) + "\n")
    bands = [f"{1 + i // 2500}{'pq'[(i // 1250) % 2]}{(i // 25) % 50}" for i in range(len(genes))]
    rows = "".join(f"{g}\t{b}\n" for g, b in zip(genes, bands))
    (workdir / REFERENCE_OPTION["genomic"]).write_text("gene_symbol\tcytobandID\n" + rows)
    rng = random.Random(seed)
    n_sets = max(1, len(genes) // 50)
    sets = [f"SET{k}\tsynthetic\t" + "\t".join(rng.sample(genes, min(40, len(genes)))) for k in range(n_sets)]
    (workdir / REFERENCE_OPTION["biofunction"]).write_text("\n".join(sets) + "\n")


def launch(spec: dict, script: Path = Path(__file__)) -> dict:
    """Run one stage in a fresh interpreter (`script --child SPEC`); seconds = its whole wall
    time (start-up and imports too)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(script.resolve()), "--child", json.dumps(spec)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    seconds = time.perf_counter() - start
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARK)]
    if proc.returncode or not lines:
        sys.stdout.write(proc.stdout)
        raise SystemExit(f"stage {spec['stage']} failed (exit status {proc.returncode})")
    return {"stage": spec["stage"], "seconds": seconds, **json.loads(lines[-1][len(MARK) :])}


def markdown(rows: list[dict]) -> str:
    """The results as a Markdown table."""
    lines = [
        "| stage | seconds | of which start-up + imports | peak RSS MiB | cells | nnz | detail |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['stage']} | {r['seconds']:.1f} | {r['import_seconds']:.1f} | {r['peak_rss_mib']:.0f}"
            f" | {r['cells']:,} | {r['nnz']:,} | {r['detail']} |"
        )
    total = sum(r["seconds"] for r in rows if r["stage"] in STAGES)
    peak = max(r["peak_rss_mib"] for r in rows if r["stage"] in STAGES)
    lines.append(f"| **total (CPU stages)** | **{total:.1f}** | | **{peak:.0f}** (max) | | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line: generate (optionally), run the three stages, report, check the targets."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--h5ad", type=Path, help="input counts (raw X, obs column --target)")
    source.add_argument("--cells", type=int, help="generate a synthetic input of this many cells")
    parser.add_argument("--genes", type=int, default=20_000)
    parser.add_argument("--nnz-per-cell", type=float, default=1_000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reuse", action="store_true", help="keep an already generated input")
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--min-cells", type=int, default=50)
    parser.add_argument("--num-bins", type=int, default=10)
    parser.add_argument("--target", default="celltype")
    parser.add_argument(
        "--methods",
        default="random",
        help="comma-separated context methods to time (random always runs first), e.g. random,genomic",
    )
    parser.add_argument(
        "--linear-member",
        action="store_true",
        help="also fit the linear member on the windows (not in the targets)",
    )
    parser.add_argument("--max-seconds", type=float, help="fail if the three stages take longer in total")
    parser.add_argument("--max-rss-mib", type=float, help="fail if any stage peaks above this")
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    common = {
        "workdir": str(args.workdir.resolve()),
        "max_length": args.max_length,
        "min_cells": args.min_cells,
        "num_bins": args.num_bins,
        "target": args.target,
    }
    rows = []
    if args.h5ad is None:
        name = f"synthetic_{args.cells}x{args.genes}x{args.nnz_per_cell:g}_s{args.seed}.h5ad"
        args.h5ad = args.workdir / name
        if not (args.reuse and args.h5ad.is_file()):
            generate = {"cells": args.cells, "genes": args.genes, "nnz_per_cell": args.nnz_per_cell}
            generate.update(classes=args.classes, seed=args.seed)
            rows.append(launch({**common, **generate, "stage": "generate", "h5ad": str(args.h5ad.resolve())}))
    for stage in STAGES:
        rows.append(launch({**common, "stage": stage, "h5ad": str(args.h5ad.resolve())}))
    if args.linear_member:
        rows.append(launch({**common, "stage": "linear_member", "h5ad": str(args.h5ad.resolve())}))
    others = [m for m in args.methods.split(",") if m and m != "random"]
    if others:
        write_references(args.h5ad, args.workdir, args.seed)
    for method in others:
        for stage in ("vocabulary", "contexts"):
            spec = {
                **common,
                "stage": f"{stage}:{method}",
                "method": method,
                "h5ad": str(args.h5ad.resolve()),
            }
            rows.append(launch(spec))
    print(markdown(rows))
    with open(args.workdir / "stages.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["stage", "seconds", "peak_rss_mib", "cells", "nnz"])
        for r in rows:
            writer.writerow(
                [r["stage"], f"{r['seconds']:.2f}", f"{r['peak_rss_mib']:.1f}", r["cells"], r["nnz"]]
            )
    staged = [r for r in rows if r["stage"] in STAGES]
    failures = []
    total = sum(r["seconds"] for r in staged)
    random_contexts = next(r["seconds"] for r in rows if r["stage"] == "contexts")
    for r in rows:
        if r["stage"].startswith("contexts:") and r["seconds"] > 2 * random_contexts:
            failures.append(f"{r['stage']}: {r['seconds']:.1f} s > 2x random ({random_contexts:.1f} s)")
    if args.max_seconds is not None and total > args.max_seconds:
        failures.append(f"total {total:.1f} s > --max-seconds {args.max_seconds:g}")
    for r in rows[1:] if rows[0]["stage"] == "generate" else rows:
        if args.max_rss_mib is not None and r["peak_rss_mib"] > args.max_rss_mib:
            failures.append(
                f"{r['stage']}: peak RSS {r['peak_rss_mib']:.0f} MiB > --max-rss-mib {args.max_rss_mib:g}"
            )
    for failure in failures:
        print(f"TARGET MISSED: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child(sys.argv[2])
    else:
        sys.exit(main())
