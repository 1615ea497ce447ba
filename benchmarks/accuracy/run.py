"""Accuracy harness: our workflow (named configs) beside logistic regression, CellTypist and the
majority class on one labelled split, or on several (--seeds) with a summary over them.
See benchmarks/accuracy/README.md.

    .venv/bin/python benchmarks/accuracy/run.py --dataset pbmc68k_reduced --label bulk_labels \
        --configs default --seeds 1314521 1 2 3 4 --out benchmarks/out/accuracy/pbmc68k_bulk
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import baselines
import datasets
import ours
import report
import summary

REPO = Path(__file__).resolve().parents[2]
METHODS = ("ours", "logreg", "celltypist", "majority")
log = logging.getLogger("accuracy")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dataset",
        default="pbmc68k_reduced",
        help="pbmc68k_reduced, krumsiek11, oligodendroglioma, a held-back set (cbmc, pbmc3k,"
        " baron_human, zeisel) or an .h5ad",
    )
    parser.add_argument("--label", default="bulk_labels", help="obs column with the labels")
    parser.add_argument(
        "--configs", nargs="+", default=["default"], help="named configs (configs/NAME.yaml) or YAML paths"
    )
    parser.add_argument("--seed", type=int, default=1314521, help="split seed, also the workflow's seed")
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        help="several splits (each seed as --seed) into OUT/seed_S, then OUT/summary.md over them",
    )
    parser.add_argument(
        "--out", type=Path, help="output dir (default benchmarks/out/accuracy/DATASET_LABEL_SEED)"
    )
    parser.add_argument(
        "--methods", default=",".join(METHODS), help=f"comma-separated subset of {','.join(METHODS)}"
    )
    parser.add_argument("--train-file", help="labelled .h5ad to train on instead of splitting --dataset")
    parser.add_argument(
        "--val-file", help="labelled .h5ad for validation (default: a stratified part of train)"
    )
    parser.add_argument("--test-file", help="labelled .h5ad to score (with --train-file)")
    parser.add_argument("--val-fraction", type=float, default=0.15)
    parser.add_argument("--test-fraction", type=float, default=0.15)
    parser.add_argument(
        "--top-genes", type=int, help="keep the N most variable genes of the training cells (all: default)"
    )
    parser.add_argument("--max-cells", type=int, help="a seeded stratified sample of --dataset first")
    parser.add_argument("--cores", type=int, default=2, help="snakemake --cores for our workflow")
    parser.add_argument(
        "--repo", type=Path, default=REPO, help="checkout whose Snakefile runs (default: this one)"
    )
    parser.add_argument("--celltypist-python", default=baselines.DEFAULT_CELLTYPIST_PYTHON)
    args = parser.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown:
        parser.error(f"--methods: unknown {unknown}; expected some of {list(METHODS)}")
    if args.out is None:
        name = Path(args.train_file).stem if args.train_file else Path(args.dataset).stem
        splits = "splits" if args.seeds else args.seed
        args.out = REPO / "benchmarks" / "out" / "accuracy" / f"{name}_{args.label}_{splits}"
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    args = parse(argv)
    if not args.seeds:
        return run_split(args)
    if args.train_file:
        raise SystemExit("--seeds splits --dataset; given --train-file/--test-file are one split")
    status = 0
    for seed in args.seeds:
        status |= run_split(
            argparse.Namespace(**{**vars(args), "seed": seed, "out": args.out / f"seed_{seed}"})
        )
    print(summary.write_summary(args.out))
    return status


def run_split(args: argparse.Namespace) -> int:
    """Every method on the split of `args.seed`; tables in `args.out`."""
    args.out.mkdir(parents=True, exist_ok=True)
    split = datasets.split_dataset(args)
    paths = datasets.write_split(split, args.label, args.out / "data")
    log.info("cells: %s; genes: %d", {k: v.n_obs for k, v in split.parts().items()}, split.train.n_vars)
    true = split.test.obs[args.label].astype(str).to_numpy()
    results: list[tuple[str, dict]] = []
    failed = []
    if "ours" in args.methods:
        for name in args.configs:
            log.info("ours: config %s", name)
            workdir = args.out / "runs" / Path(name).stem
            try:
                run = ours.run_ours(
                    *(name, paths, split.train, args.label, args.seed, workdir, args.repo, args.cores),
                    args.val_fraction,
                )
            except RuntimeError as err:  # one failed config does not lose the others
                log.error("%s", err)
                failed.append(name)
                continue
            results.append((f"ours:{Path(name).stem}", run))
            if "linear_alone" in run:
                results.append((f"ours:{Path(name).stem}:linear", run["linear_alone"]))
    if "logreg" in args.methods:
        results.append(("logreg", baselines.logreg(split.train, split.test, args.label, args.seed)))
    if "celltypist" in args.methods:
        results.append(
            (
                "celltypist",
                baselines.celltypist(paths, args.label, args.celltypist_python, args.out / "celltypist"),
            )
        )
    if "majority" in args.methods:
        results.append(("majority", baselines.majority(split.train, split.test, args.label)))
    scored = [report.score(method, true, result) for method, result in results]
    support = split.test.obs[args.label].astype(str).value_counts()
    metrics = report.write_tables([r for r, _ in scored], [f for _, f in scored], support, args.out)
    paired = report.paired_bootstrap(true, dict(results), args.seed)
    paired.to_csv(args.out / "paired_cells.csv", index=False)
    (args.out / "paired_cells.md").write_text(report.markdown(paired.set_index("method")))
    print(report.markdown(metrics))
    print(report.markdown(paired.set_index("method")))
    log.info("tables in %s", args.out)
    if failed:
        log.error("failed configs: %s", failed)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
