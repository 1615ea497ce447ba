"""Every shell command that README.md, docs/*.md and `scgenai --help` show runs and exits 0, so a
documented command cannot rot (issue 24: the README's own `--configfile my_config.yaml all` failed).

Commands are the lines of ```sh / ```bash / ```shell / ```console blocks (console: the `$ ` lines;
a trailing backslash continues a line), the inline code spans of prose (not of tables, which show
syntax such as `scgenai train --config_file F`) that start with a tool of COMMAND_WORDS and give
it an argument, and the examples of the `scgenai --help` epilog. Each runs in a fresh directory
set up as a user's checkout after `make setup`: the repository's files linked in, `.venv` the
environment running the tests, a home whose ~/.config/snakemake holds the profiles, and the
user's files of USER_FILES (small real h5ad files of pbmc68k_reduced, configs naming them, a
model dir). Workflow commands run dry (`make -n`, `snakemake -n`, `scgenai ... -n`); a command
needing a file that neither the checkout nor USER_FILES provides, or a tool the test does not
know, fails: extend USER_FILES or `dry`, or add the command to SKIP with the reason."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from scgenai_flow import cli
from scgenai_flow.config import with_defaults
from scgenai_flow.data import write_splits

DOCS = ["README.md", *(f"docs/{p.name}" for p in sorted((REPO / "docs").glob("*.md")))]
SHELL_FENCES = {"sh", "bash", "shell", "console"}
# First words of a command (a path's basename: .venv/bin/snakemake is snakemake).
COMMAND_WORDS = {
    *("snakemake", "scgenai", "make", "python", "python3", "pip", "conda", "mamba", "mkdir", "cp"),
    *("sbatch", "srun", "squeue", "sinfo", "sacct", "sacctmgr", "scontrol"),
}
# Inline spans that name a command in prose rather than show one to run.
MENTIONS = {"scgenai train", "scgenai predict", "scgenai finetune", "scgenai run", "scgenai config convert"}
# Commands that cannot run here (a regex searched in the command's text) and why.
SKIP = {
    r"^(sbatch|srun|squeue|sinfo|sacct|sacctmgr|scontrol)\b": "needs a SLURM cluster (make test-slurm)",
    r"^tests/slurm/cluster\.sh\b": "starts SLURM daemons as root with apt-get (make test-slurm runs it)",
    r"--sdm conda|--use-conda|^(conda|mamba)\b": "needs conda, which the test environment lacks",
    r"^pip install\b": "installs into the environment running the tests (`make -n setup` is tested)",
    r"benchmarks/stages\.py --cells 100000\b": "a benchmark of minutes and GiB on 100,000 cells",
}
# What a user has beside the checkout. h5ad files: splits of pbmc68k_reduced (label bulk_labels).
H5AD = {"train.h5ad": "train", "val.h5ad": "val", "predict.h5ad": "predict", "new_cells.h5ad": "new"}
NATIVE = {
    "data": {
        "train": "train.h5ad",
        "val": "val.h5ad",
        "predict": "predict.h5ad",
        "target_feature": "bulk_labels",
    }
}
OLD_TRAIN = {
    "mode": "Train",
    "train_file": "train.h5ad",
    "val_file": "val.h5ad",
    "model_dir": "model/",
    "target_feature": "bulk_labels",
}
MODEL = "trained/best_model"  # a model dir (its train_setting.yaml: all a dry run reads)
OLD_PREDICT = {"mode": "Predict", "predict_file": "predict.h5ad", "model_dir": MODEL, "outputfile": "out.csv"}
OLD_FINETUNE = {"mode": "Finetune", "train_file": "new_cells.h5ad", "model_dir": MODEL, "finetune_dir": "ft/"}
USER_FILES = {
    # README, Using your own data + Fine-tuning; docs/cli.md, config convert's output
    "my_config.yaml": {**NATIVE, "finetune": {"train": "new_cells.h5ad"}},
    "native.yaml": NATIVE,
    # configs of the original scGenAI (README, Coming from the original; docs/cli.md)
    **dict.fromkeys(("train_config.yaml", "config_Train.yaml", "old.yaml"), OLD_TRAIN),
    **dict.fromkeys(("predict_config.yaml", "config_Prediction.yaml"), OLD_PREDICT),
    **dict.fromkeys(("finetune_config.yaml", "config_Finetune.yaml"), OLD_FINETUNE),
}
# The user's profiles in ~/.config/snakemake: what make setup links, and docs/slurm.md's copy.
LINKED_PROFILES = ("slurm", "local")
COPIED_PROFILES = {"mycluster": "slurm"}
INPUT_FILE = re.compile(r"\.(ya?ml|h5ad|csv|tsv|txt|gmt|json|npz)$")
NOT_IN_A_CLONE = {"results", "report.html", "dag.svg"}  # .gitignore'd outputs of a run
# Copied rather than linked: documented commands write into them (docs/config.md is regenerated).
COPIED_ENTRIES = {"docs"}
# `python -m MODULE ...` commands that run as they are.
PYTHON_MODULES = {"scgenai_flow.config_docs", "scgenai_flow.api_docs"}


@dataclass(frozen=True)
class Command:
    source: str
    line: int
    text: str

    @property
    def words(self) -> list[str]:
        """The command's words up to the first shell operator (no comment, no redirect)."""
        words = shlex.split(self.text, comments=True)
        ends = [i for i, w in enumerate(words) if w in {">", ">>", "|", "&&", "||", ";"}]
        return words[: ends[0]] if ends else words

    @property
    def tool(self) -> str:
        return Path(self.words[0]).name


def is_command(span: str) -> bool:
    words = span.split()
    tool = Path(words[0]).name if words else ""
    return len(words) > 1 and (tool in COMMAND_WORDS or tool.endswith(".sh")) and span not in MENTIONS


def commands_of(source: str, text: str) -> list[Command]:
    """The fenced shell commands and the inline commands of prose in a markdown text."""
    found, fence, language, pending = [], None, "", None
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if fence is None:
            opening = re.match(r"(`{3,}|~{3,})\s*([\w+-]*)", stripped)
            if opening:
                fence, language = opening[1], opening[2].lower()
            elif not stripped.startswith("|"):  # table cells show syntax, not commands
                spans = re.findall(r"(?<!`)`([^`]+)`(?!`)", line)
                found += [Command(source, number, span) for span in spans if is_command(span)]
            continue
        if stripped.startswith(fence) and not stripped.strip(fence[0]):
            fence = None
            continue
        if language not in SHELL_FENCES:
            continue
        if pending is None:
            if language == "console":
                if not stripped.startswith("$ "):
                    continue
                stripped = stripped[2:]
            if not stripped or stripped.startswith("#"):
                continue
            pending = Command(source, number, stripped)
        else:
            pending = Command(source, pending.line, f"{pending.text[:-1].rstrip()} {stripped}")
        if not pending.text.endswith("\\"):
            found.append(pending)
            pending = None
    return found


def help_commands() -> list[Command]:
    """The examples of `scgenai --help` (cli.STAGES)."""
    lines = cli.STAGES.splitlines()
    start = lines.index("examples:")
    return [
        Command("scgenai --help", number, line.strip())
        for number, line in enumerate(lines[start:], start + 1)
        if line.startswith("  scgenai ")
    ]


def documented_commands() -> list[Command]:
    found = [c for source in DOCS for c in commands_of(source, (REPO / source).read_text())]
    return found + help_commands()


COMMANDS = documented_commands()


def ids(commands: list[Command]) -> list[str]:
    """file:line, and file:line:2 for a line's second command."""
    places = [f"{c.source}:{c.line}" for c in commands]
    return [
        place + (f":{places[:i].count(place) + 1}" if place in places[:i] else "")
        for i, place in enumerate(places)
    ]


IDS = ids(COMMANDS)


def dry(command: Command) -> str:
    """The shell text that runs `command` here: workflow commands dry, the others as they are."""
    text, tool, words = command.text, command.tool, command.words
    if tool == "make":
        return re.sub(r"^(\S*make)\b", r"\1 -n", text)
    if tool == "snakemake":
        as_is = {"--unlock", "--report"} & set(words)  # they run no jobs
        return text if as_is else re.sub(r"^(\S*snakemake)\b", r"\1 -n", text)
    if tool == "scgenai":
        return re.sub(r"^(\S*scgenai\s+(run|train|predict|finetune))\b", r"\1 -n", text)
    if tool in {"mkdir", "cp"}:
        return text
    if tool.startswith("python") and words[1:2] == ["-m"] and set(words[2:3]) & PYTHON_MODULES:
        return text
    raise AssertionError(
        f"{command.source}:{command.line}: no rule to run `{text}`: teach dry() in {Path(__file__).name} "
        "how to run it here, or add it to SKIP with the reason"
    )


def swallowed_targets(command: Command) -> list[str]:
    """Targets (`all`, results/...) that a snakemake option taking several values would read as
    its own values (`--configfile my_config.yaml all`): put targets before such options."""
    from snakemake.cli import get_argument_parser

    words = command.words[1:]
    if command.tool == "scgenai":
        if words[:1] != ["run"]:
            return []
        words = cli.parser().parse_known_args(words)[1]
    elif command.tool != "snakemake":
        return []
    parser = get_argument_parser()
    args = parser.parse_args(words)
    values = [
        str(value)
        for action in parser._actions
        if action.nargs in ("+", "*") and action.option_strings
        for value in getattr(args, action.dest, None) or []
    ]
    return [value for value in values if value == "all" or value.startswith("results/")]


@pytest.fixture(scope="session")
def user_data(pbmc, tmp_path_factory) -> Path:
    """The user's h5ad files and a model dir, written once."""
    root = tmp_path_factory.mktemp("user_data")
    parts = {"val": 0.15, "predict": 0.15, "new": 0.3}
    write_splits(pbmc, "bulk_labels", parts, 7, {part: root / f"{part}.h5ad" for part in ["train", *parts]})
    config = yaml.safe_load((REPO / "config/config.yaml").read_text()) or {}
    setting = with_defaults({**config, "data": {**config.get("data", {}), "target_feature": "bulk_labels"}})
    (root / "best_model").mkdir()
    (root / "best_model/train_setting.yaml").write_text(yaml.safe_dump(setting, sort_keys=False))
    return root


@pytest.fixture
def user(tmp_path: Path, user_data: Path) -> tuple[Path, dict[str, str]]:
    """A fresh checkout with the user's files, and the environment of its shell."""
    checkout, home = tmp_path / "scgenai-flow", tmp_path / "home"
    checkout.mkdir()
    for entry in REPO.iterdir():
        if entry.name in COPIED_ENTRIES:
            shutil.copytree(entry, checkout / entry.name)
        elif (not entry.name.startswith(".") or entry.name == ".test") and entry.name not in NOT_IN_A_CLONE:
            (checkout / entry.name).symlink_to(entry)
    (checkout / ".venv").symlink_to(sys.prefix)
    profiles = home / ".config/snakemake"
    profiles.mkdir(parents=True)
    for name in LINKED_PROFILES:
        (profiles / name).symlink_to(checkout / "profiles" / name)
    for name, source in COPIED_PROFILES.items():
        shutil.copytree(REPO / "profiles" / source, profiles / name)
    for name, part in H5AD.items():
        (checkout / name).symlink_to(user_data / f"{part}.h5ad")
    (checkout / MODEL).parent.mkdir()
    (checkout / MODEL).symlink_to(user_data / "best_model")
    for name, content in USER_FILES.items():
        (checkout / name).write_text(yaml.safe_dump(content, sort_keys=False))
    env = {key: value for key, value in os.environ.items() if key != "XDG_CONFIG_HOME"}
    env.update(HOME=str(home), PATH=f"{checkout / '.venv/bin'}{os.pathsep}{env['PATH']}", HF_HUB_OFFLINE="1")
    env.setdefault("NUMBA_CACHE_DIR", str(REPO / ".cache/numba"))
    return checkout, env


def shell(text: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", text], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def stub_finished_run(text: str, cwd: Path, env: dict[str, str]) -> None:
    """`snakemake --report` reads a finished run: every output that `--summary` lists for the same
    command, as an empty file (or directory, for an output without a suffix)."""
    summary = shell(re.sub(r"--report(\s+[^-\s]\S*)?", "--summary", text), cwd, env)
    assert summary.returncode == 0, summary.stderr[-5000:]
    for row in summary.stdout.splitlines()[1:]:
        output = cwd / row.split("\t")[0]
        if output.suffix:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.touch()
        else:
            output.mkdir(parents=True, exist_ok=True)


def test_the_docs_show_commands() -> None:
    sources = {command.source for command in COMMANDS}
    assert {"README.md", "docs/cli.md", "docs/slurm.md", "scgenai --help"} <= sources
    assert any("--configfile my_config.yaml" in command.text for command in COMMANDS)  # inline, README


@pytest.mark.parametrize("command", COMMANDS, ids=IDS)
def test_documented_command_runs(command: Command, user) -> None:
    for pattern, reason in SKIP.items():
        if re.search(pattern, command.text):
            pytest.skip(reason)
    checkout, env = user
    text = dry(command)
    swallowed = swallowed_targets(command)
    assert not swallowed, f"`{command.text}`: {swallowed} read as an option's values; put targets first"
    for word in command.words[1:] if command.tool not in {"mkdir", "cp"} else []:
        if INPUT_FILE.search(word) and not word.startswith(("results/", "~")):
            assert (checkout / word).exists(), (
                f"`{command.text}` needs {word}, which neither the checkout nor USER_FILES provides"
            )
    profile = command.words[command.words.index("--profile") + 1] if "--profile" in command.words else None
    if profile and "/" not in profile:
        assert (Path(env["HOME"]) / ".config/snakemake" / profile).is_dir(), f"unknown profile {profile}"
    if command.tool == "snakemake" and "--report" in command.words:
        stub_finished_run(text, checkout, env)
    result = shell(text, checkout, env)
    assert result.returncode == 0, (
        f"`{text}` exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    )


def test_run_passes_a_target_after_configfile_as_a_target(tmp_path) -> None:
    """`scgenai run --configfile x.yaml TARGET`: the target is not read as a second config file
    (`--dryrun`, not scgenai's own `-n`, so that no flag ends Snakemake's config file list)."""
    config = REPO / "config/config.yaml"
    result = subprocess.run(
        [str(Path(sys.executable).parent / "scgenai"), "run", "--configfile", str(config), "--cores", "1"]
        + ["results/predictions.csv", "--dryrun"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert re.search(r"^predict\s+1$", result.stdout, re.M)
    assert not re.search(r"^report\s", result.stdout, re.M)
