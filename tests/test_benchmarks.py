"""Smoke tests of the benchmark scripts (the measurements themselves are not part of make test):
they run end to end on tiny inputs and report what they promise."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import REPO


def run_script(*arguments: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, *arguments], capture_output=True, text=True, env=env, timeout=900)


def test_the_scale_benchmark_runs_every_stage_and_reports_growth(tmp_path) -> None:
    done = run_script(
        str(REPO / "benchmarks/scale.py"), "--cells", "300", "3000", "--genes", "400", "--nnz-per-cell", "60",
        "--steps", "2", "--batch-size", "4", "--workdir", str(tmp_path), "--max-growth", "1000",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = json.loads((tmp_path / "scale.json").read_text())
    sys.path.insert(0, str(REPO / "benchmarks"))
    from scale import SCALE_STAGES

    assert [r["stage"] for r in rows] == [*SCALE_STAGES, *SCALE_STAGES]
    assert all(r["seconds"] > 0 and r["peak_rss_mib"] > 50 for r in rows)
    table = (tmp_path / "scale.md").read_text()
    assert "| 3,000 | predict |" in table and "x |" in table  # growth per 10x beside the larger size
    assert "L-BFGS iterations" in table and "windows/s" in table
    predictions = (tmp_path / "cells_3000" / "predictions.csv").read_text().splitlines()
    assert len(predictions) == 3001  # every cell predicted


def test_the_gpu_check_reports_speed_at_two_batch_sizes_on_the_cpu_too(tmp_path) -> None:
    done = run_script(
        str(REPO / "benchmarks/gpu_check.py"), "--workdir", str(tmp_path), "--steps", "2",
        "--batch-sizes", "4", "8", "--max-length", "64", "--size", "tiny",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "MFU against" in done.stdout and "measured float32 matmul on cpu" in done.stdout
    assert done.stdout.count("  train: 2 steps") == 2 and done.stdout.count("  predict: ") == 2
    assert "batch 4" in done.stdout and "batch 8" in done.stdout and "MFU " in done.stdout
