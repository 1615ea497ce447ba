# Two commands: `make run` (set up + run the whole workflow) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= 2
STAMP := $(VENV)/.installed

.PHONY: setup link-profiles run test test-slurm gpu-check lint format dag clean

setup: $(STAMP) link-profiles

# torch is pinned (==2.13.0) in pyproject.toml so pip never pulls another build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# `snakemake --profile slurm` looks in ~/.config/snakemake, not in profiles/: link ours there,
# leaving any other profile of the same name alone.
PROFILE_HOME ?= $(HOME)/.config/snakemake
link-profiles:
	@mkdir -p '$(PROFILE_HOME)'
	@for name in slurm local; do \
		target='$(CURDIR)/profiles'/$$name; link='$(PROFILE_HOME)'/$$name; \
		if [ "$$(readlink "$$link")" = "$$target" ]; then :; \
		elif [ -L "$$link" ] && [ ! -e "$$link" ]; then \
			ln -sfn "$$target" "$$link" && echo "relinked dangling profile $$link -> $$target"; \
		elif [ -e "$$link" ] || [ -L "$$link" ]; then \
			echo "profile $$link exists and is not $$target: left alone (use --profile profiles/$$name)"; \
		else ln -s "$$target" "$$link" && echo "linked profile $$link -> $$target"; fi; \
	done

run: setup
	HF_HUB_OFFLINE=1 $(BIN)/snakemake --profile profiles/local --cores $(CORES) all

# One process: torch already uses both cores; two pytest workers (pytest-xdist) oversubscribed
# them and took 30 min instead of 15 on this machine.
# One numba cache for all the test workflows (UMAP compiles once, not once per run: ~30 s each).
test: setup
	HF_HUB_OFFLINE=1 NUMBA_CACHE_DIR=$(CURDIR)/.cache/numba $(BIN)/python -m pytest --durations=15

# A real single-node SLURM (root; installs slurmctld/slurmd/munge with apt-get if missing).
# Its jobs inherit the environment, so they share make test's numba cache too.
test-slurm: setup
	HF_HUB_OFFLINE=1 NUMBA_CACHE_DIR=$(CURDIR)/.cache/numba $(BIN)/python -m pytest -m slurm tests/test_slurm.py

# A short GPU training + prediction on the embedded data: windows/s, tokens/s, peak GPU memory.
gpu-check: setup
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/gpu_check.py

lint: setup
	$(BIN)/ruff check src scripts tests benchmarks
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint --cores 1 -n

format: setup
	$(BIN)/ruff format src scripts tests benchmarks
	$(BIN)/ruff check --fix src scripts tests benchmarks
	$(BIN)/snakefmt Snakefile workflow/rules

dag: setup
	$(BIN)/snakemake --dag all | dot -Tsvg > dag.svg

clean:
	rm -rf results .snakemake
