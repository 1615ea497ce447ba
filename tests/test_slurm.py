"""profiles/slurm: GPU rules to partition gpu with a GPU, the rest to cpu, checked on a dry run and
on a real single-node SLURM (tests/slurm/cluster.sh; the `slurm` marker, `make test-slurm`).

On the cluster the evidence comes from SLURM itself (`scontrol show job`)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO
from test_workflow import TINY, planned_jobs, snakemake

CLUSTER = REPO / "tests/slurm/cluster.sh"
PROFILE = REPO / "profiles/slurm"
SET_RESOURCES = yaml.safe_load((PROFILE / "config.yaml").read_text())["set-resources"]
GPU_RULES = {rule for rule, resources in SET_RESOURCES.items() if resources.get("gpu")}
NO_GPU_WARNING = "GPU(s) requested (CUDA_VISIBLE_DEVICES=0) but torch sees none: running on CPU"
DAEMONS = ("slurmctld", "slurmd", "sbatch", "munged")
# routing, not accuracy, is under test: 66 genes (one window per cell), one epoch
SLURM_TINY = {
    **TINY,
    "preprocess": {"min_cells": 350},
    "context": {"max_length": 64},
    "train": {"num_epochs": 1, "batch_size": 64, "learning_rate": 2e-3, "ensemble": 1},
}


def dry_run_resources(output: str) -> dict[str, dict[str, str]]:
    """Rule -> its resources in a dry run's log (of the last job of each rule)."""
    resources, rule = {}, None
    for line in output.splitlines():
        if match := re.match(r"(?:local)?rule (\w+):$", line):
            rule = match[1]
        elif rule and line.strip().startswith("resources:"):
            resources[rule] = dict(re.findall(r"(\w+)=([^,]*)", line))
    return resources


def test_make_links_the_profiles_so_the_bare_profile_name_works(tmp_path, monkeypatch) -> None:
    profiles = tmp_path / "home/.config/snakemake"
    (profiles / "local").mkdir(parents=True)  # the user's own profile of that name
    for _ in range(2):  # idempotent
        made = subprocess.run(
            ["make", "-s", "-C", str(REPO), "link-profiles", f"PROFILE_HOME={profiles}"],
            capture_output=True,
            text=True,
            check=True,
        )
    assert (profiles / "slurm").resolve() == PROFILE
    assert not (profiles / "local").is_symlink() and "left alone" in made.stdout
    workdir = tmp_path / "run"
    workdir.mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(workdir)
    dry = snakemake(workdir, "all", "-n", "--profile", "slurm", config=SLURM_TINY)
    resources = dry_run_resources(dry.stdout + dry.stderr)
    assert {"split_data", "contexts", "train", "predict", "report"} <= set(resources)
    for rule, res in resources.items():
        if rule in GPU_RULES:
            assert (res["slurm_partition"], res["gpu"]) == ("gpu", "1"), (rule, res)
        elif rule != "all":
            assert (res["slurm_partition"], res.get("gpu", "0"), res.get("gres")) == ("cpu", "0", None), (
                rule,
                res,
            )


def unavailable() -> str | None:
    """Why this machine cannot host the test cluster (None when it can)."""
    if os.geteuid() != 0:
        return "starting a SLURM cluster needs root"
    installed = all(shutil.which(d) or Path("/usr/sbin", d).exists() for d in DAEMONS)
    if not installed and not shutil.which("apt-get"):
        return "SLURM/munge are not installed and there is no apt-get to install them"
    return None


@pytest.fixture(scope="module")
def cluster(request):
    """A running cluster; stopped afterwards only when this fixture started it."""
    if "slurm" not in request.config.getoption("markexpr"):
        pytest.skip("starts a real SLURM cluster (root, apt-get): select with `-m slurm` (make test-slurm)")
    reason = unavailable()
    if reason:
        pytest.skip(f"SLURM test skipped: {reason}")
    start = subprocess.run([str(CLUSTER), "start"], capture_output=True, text=True)
    assert start.returncode == 0, f"cluster.sh start failed:\n{start.stdout}{start.stderr}"
    yield
    if start.stdout.strip() == "started":
        subprocess.run([str(CLUSTER), "stop"], check=True)


def slurm_jobs(run_id: str) -> list[dict[str, str]]:
    """`scontrol show job` fields of the jobs of one Snakemake run (job name = run id)."""
    out = subprocess.run(["scontrol", "-o", "show", "job"], capture_output=True, text=True, check=True)
    jobs = [dict(re.findall(r"(\w+)=(\S*)", line)) for line in out.stdout.splitlines()]
    return [job for job in jobs if job.get("JobName") == run_id]


def rule_of(job: dict[str, str]) -> str:
    """The plugin's job comment is rule_<name>[_wildcards_<...>]."""
    return job["Comment"].removeprefix("rule_").split("_wildcards_")[0]


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory) -> tuple[Path, dict[str, int], list[dict[str, str]]]:
    """The tiny workflow through the SLURM profile: workdir, planned rule counts, its SLURM jobs."""
    workdir = tmp_path_factory.mktemp("slurm")
    planned = planned_jobs(workdir, "all", config=SLURM_TINY)
    # first status check after 3 s instead of the plugin's 40 s keeps the test short
    result = snakemake(
        workdir,
        "all",
        "--profile",
        str(PROFILE),
        "--slurm-init-seconds-before-status-checks",
        "3",
        config=SLURM_TINY,
    )
    run_id = re.search(r"SLURM run ID: (\S+)", result.stdout + result.stderr)
    assert run_id, "no SLURM run ID in Snakemake's log: did the slurm executor run?"
    return workdir, planned, slurm_jobs(run_id[1])


@pytest.mark.slurm
def test_every_rule_ran_as_a_completed_slurm_job(slurm_run) -> None:
    workdir, planned, jobs = slurm_run
    expected = {rule: count for rule, count in planned.items() if rule != "all"}
    assert Counter(rule_of(job) for job in jobs) == expected
    assert {(job["JobState"], job["ExitCode"]) for job in jobs} == {("COMPLETED", "0:0")}
    table = pd.read_csv(workdir / "results/predictions.csv", index_col=0)
    assert len(table) > 0 and table["PredictedFeature"].notna().all()


@pytest.mark.slurm
def test_gpu_rules_ran_in_the_gpu_partition_with_a_gpu(slurm_run) -> None:
    workdir, _, jobs = slurm_run
    gpu_jobs = [job for job in jobs if rule_of(job) in GPU_RULES]
    assert {"train", "predict"} <= {rule_of(job) for job in gpu_jobs}
    for job in gpu_jobs:
        assert job["Partition"] == "gpu", job
        assert "gpu:1" in job.get("TresPerJob", ""), job
    # SLURM handed the jobs GPU 0; torch finds no device behind it and the rules fall back to CPU
    for rule in ("train", "predict"):
        assert NO_GPU_WARNING in (workdir / f"results/logs/{rule}.log").read_text()


@pytest.mark.slurm
def test_cpu_rules_ran_in_the_cpu_partition_without_a_gpu(slurm_run) -> None:
    _, _, jobs = slurm_run
    cpu_jobs = [job for job in jobs if rule_of(job) not in GPU_RULES]
    assert {"split_data", "contexts", "report"} <= {rule_of(job) for job in cpu_jobs}
    for job in cpu_jobs:
        assert job["Partition"] == "cpu", job
        assert not any("gpu" in job.get(key, "") for key in ("TresPerJob", "TresPerNode", "TRES")), job
