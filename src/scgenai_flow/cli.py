"""The `scgenai` command: the original scGenAI's `train|predict|finetune --config_file`, plus
`run` (the native workflow) and `config convert` (an old config as a native one)."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import yaml

from .io import InputError, atomic_path
from .legacy import LegacyRun, deep_update, resolve_paths, translate

REPO = Path(__file__).resolve().parents[2]
SNAKEFILE = REPO / "Snakefile"
# The original scGenAI's method, layered under a config on purpose (`--original`).
ORIGINAL_PRESET = REPO / "config" / "presets" / "original.yaml"
log = logging.getLogger("scgenai")

STAGES = """\
stages (Snakemake rules) and their targets under `results/`:
  split_data          data/{train,val,predict}.h5ad
  preprocess_*        preprocessed/{split}.h5ad
  vocabulary          vocab/
  contexts            contexts/{split}.npz
  train               model/best_model, model/last_model, model/combined_epoch_results.csv
  validate, report    model/train_summary.pdf, model/validation_metrics.csv
  finetune_*          finetune/best_model, finetune/last_model, finetune/train_summary.pdf
  predict             predictions.csv
  prediction_report   predictions.h5ad, prediction_umap.png, prediction_metrics.csv
  all                 everything the config enables (the default target)

examples:
  scgenai train --config_file config_Train.yaml        # a config file of the original scGenAI
  scgenai predict --config_file config_Prediction.yaml
  scgenai config convert config_Train.yaml > native.yaml
  scgenai run --cores 4 results/predictions.csv --configfile native.yaml
  scgenai run --cores 2 results/model/train_summary.pdf --forcerun report
docs/cli.md lists every flag and how each key of the original maps to the native config."""


def read_yaml(path: str | Path) -> dict:
    """A YAML mapping, with a clear error for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise InputError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping of config keys")
    return data


def legacy_run(config_file: str | Path, command: str | None, original: bool = False) -> LegacyRun:
    """Translate an old config file; its relative paths are taken from the current directory.
    With `original`, the translation is layered over the original's method (the preset)."""
    run = translate(resolve_paths(read_yaml(config_file), Path.cwd()), command)
    if original:
        run = replace(run, config=deep_update(read_yaml(ORIGINAL_PRESET), run.config))
    return run


def work_dir(run: LegacyRun) -> Path:
    """Where the workflow runs: beside the outputs (same file system), removed unless kept."""
    first = next(iter(run.outputs.values()))
    if run.mode == "predict":
        return first.parent / f"{first.stem}.scgenai_work"
    return first.parent / "scgenai_work"


def runtime_config(run: LegacyRun, results: Path, cores: int, gpus: int | str) -> dict:
    """The translated config plus where results go and each GPU rule's threads and GPUs."""
    config = {**run.config, "results": str(results)}
    for section in ("train", "finetune", "predict"):
        config[section] = {**config.get(section, {}), "threads": cores, "gpu": gpus}
    return config


def run_snakemake(configfile: Path, targets: Sequence[str], workdir: Path, cores: int, dry_run: bool) -> bool:
    """Build `targets` with the Snakemake API; False if a job failed."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import (
        ConfigSettings,
        DAGSettings,
        ExecutionSettings,
        OutputSettings,
        ResourceSettings,
    )

    with SnakemakeApi(OutputSettings(dryrun=dry_run, stdout=dry_run)) as api:
        try:
            workflow = api.workflow(
                resource_settings=ResourceSettings(cores=cores),
                config_settings=ConfigSettings(configfiles=[configfile]),
                snakefile=SNAKEFILE,
                workdir=workdir,
            )
            dag = workflow.dag(DAGSettings(targets=frozenset(targets), force_incomplete=True))
            dag.execute_workflow(
                executor="local",
                pseudo_executor="dryrun" if dry_run else None,
                execution_settings=ExecutionSettings(standalone=True),
            )
        except Exception as err:  # Snakemake reports its own errors (failed job, bad config)
            api.print_exception(err)
            return False
    return True


def publish(source: Path, target: Path) -> None:
    """Copy a result to where the original wrote it, atomically (temp name, then rename)."""
    with atomic_path(target) as tmp:
        if source.is_dir():
            shutil.copytree(source, tmp)
        else:
            shutil.copyfile(source, tmp)
    log.info("wrote %s", target)


def run_legacy(
    command: str, config_file: str, cores: int, gpus: int | str, dry_run: bool, original: bool = False
) -> int:
    """`scgenai train|predict|finetune --config_file FILE`: run and publish the outputs."""
    run = legacy_run(config_file, command, original)
    for note in run.notes:
        log.info("%s: %s", config_file, note)
    work = work_dir(run)
    created = not work.exists()
    work.mkdir(parents=True, exist_ok=True)
    configfile = work / "config.yaml"
    configfile.write_text(yaml.safe_dump(runtime_config(run, work, cores, gpus), sort_keys=False))
    targets = [str(work / native) for native in run.outputs]
    ok = run_snakemake(configfile, targets, work, cores, dry_run)
    if dry_run:
        if created:
            shutil.rmtree(work)
        return 0 if ok else 1
    if run.log_dir is not None and (work / "logs").is_dir():
        shutil.copytree(work / "logs", run.log_dir, dirs_exist_ok=True)
    if not ok:
        log.error("%s failed; logs and intermediate files are in %s", command, work)
        return 1
    for native, target in run.outputs.items():
        publish(work / native, target)
    if not run.keep_intermediate:
        shutil.rmtree(work)
    return 0


def convert(config_file: str, original: bool = False) -> int:
    """Print the native config equivalent to an old one."""
    run = legacy_run(config_file, None, original)
    for note in run.notes:
        log.info("%s: %s", config_file, note)
    header = f"# scgenai-flow config translated from {config_file} (mode {run.mode})\n"
    sys.stdout.write(header + yaml.safe_dump(run.config, sort_keys=False))
    return 0


def run_native(args: argparse.Namespace, extra: list[str]) -> int:
    """`scgenai run`: the native workflow through Snakemake's own command line, in process
    (profiles and executor plugins are resolved there, not by its Python API); `extra`
    (targets, other flags) is passed through as given, before `--configfile`: that flag takes
    every following word as a file, so a target after it would be read as a config file."""
    from snakemake.cli import main as snakemake_main

    argv = ["--snakefile", str(SNAKEFILE), "--cores", str(args.cores), *extra]
    argv += ["--configfile", *(args.configfile or [str(REPO / "config/config.yaml")])]
    if args.profile:
        argv += ["--profile", args.profile]
    if args.directory:
        argv += ["--directory", args.directory]
    if args.dry_run:
        argv.append("--dry-run")
    try:
        snakemake_main(argv)
    except SystemExit as done:
        return int(done.code or 0)
    return 0


def gpu_count(value: str) -> int | str:
    """`--gpus`: a count, or auto (a GPU where torch sees one, as the original did)."""
    if value == "auto":
        return value
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"expected a number of GPUs or auto, got {value!r}")
    return int(value)


ORIGINAL_HELP = (
    "the original scGenAI's method (config/presets/original.yaml) for keys the file leaves out;"
    " default: the recommended method (the schema's defaults)"
)


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(
        prog="scgenai",
        description="scgenai-flow: transformer cell classifiers for single-cell data (a Snakemake workflow).",
        epilog=STAGES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = main.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, what in (
        ("train", "train a model"),
        ("predict", "predict cells"),
        ("finetune", "fine-tune a model"),
    ):
        sub = commands.add_parser(name, help=f"{what} from a config file of the original scGenAI")
        sub.add_argument("--config_file", required=True, help="YAML config in the original's flat format")
        sub.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="CPU cores (default: all)")
        sub.add_argument(
            "--gpus",
            type=gpu_count,
            default="auto",
            help="GPUs per GPU rule, or auto (default): a GPU where torch sees one",
        )
        sub.add_argument("--original", action="store_true", help=ORIGINAL_HELP)
        sub.add_argument("-n", "--dry-run", action="store_true", help="show the jobs, run nothing")
    run = commands.add_parser(
        "run",
        help="run the native workflow; targets and other snakemake flags are passed through",
        allow_abbrev=False,
    )
    run.add_argument(
        "--configfile",
        action="append",
        help="native config file; repeat to layer (default: config/config.yaml)",
    )
    run.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="CPU cores (default: all)")
    run.add_argument("--profile", help="Snakemake profile dir (e.g. profiles/slurm)")
    run.add_argument("--directory", "-d", help="working directory (default: current)")
    run.add_argument("-n", "--dry-run", action="store_true", help="show the jobs, run nothing")
    config = commands.add_parser("config", help="config file tools")
    tools = config.add_subparsers(dest="tool", required=True, metavar="TOOL")
    conv = tools.add_parser("convert", help="print the native config equivalent to an original one")
    conv.add_argument("config_file", help="YAML config in the original's flat format")
    conv.add_argument("--original", action="store_true", help=ORIGINAL_HELP)
    return main


def main(argv: Sequence[str] | None = None) -> int:
    handler = logging.StreamHandler(sys.stderr)  # the current stderr, also when called in process
    handler.setFormatter(logging.Formatter("scgenai: %(message)s"))
    log.handlers[:], log.propagate = [handler], False
    log.setLevel(logging.INFO)
    args, extra = parser().parse_known_args(argv)
    if extra and args.command != "run":
        parser().error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command == "run":
            return run_native(args, extra)
        if args.command == "config":
            return convert(args.config_file, args.original)
        return run_legacy(args.command, args.config_file, args.cores, args.gpus, args.dry_run, args.original)
    except InputError as err:
        log.error("%s", err)
        return 2
