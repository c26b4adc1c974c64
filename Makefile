# The two commands of the README: `make demo` (embedded demo, CPU, offline) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
CORES ?= 2
# Snakemake's shell rules (papermill) need the environment's executables on PATH. The venv is installed without
# byte-compiling its ~24,000 modules (pip spends about 2 minutes on it); the few thousand a job imports are compiled
# on first import instead, so Python must be free to write bytecode even where PYTHONDONTWRITEBYTECODE is set,
# or every job would compile its imports again.
RUN := PATH="$(BIN):$$PATH" PYTHONDONTWRITEBYTECODE=

.PHONY: venv demo test test-fast paper paper-dry-run estimate cluster-check lint bench bench-demo bench-gpu-tiny gpu-carry demo-robustness clean-demo oracle oracle-venv

venv: $(VENV)/.installed

# the real tokenizers of the paper's models and the class names of its datasets (vlmrepro/data/reference_files.yaml)
# go to .reference/: the tests' and the oracle's tiny checkpoints are built on the tokenizers
$(VENV)/.installed: requirements.txt pyproject.toml vlmrepro/data/reference_files.yaml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --no-compile -r requirements.txt
	$(BIN)/pip install --quiet --no-compile --no-deps -e .
	$(BIN)/python -m vlmrepro.reference_files .reference
	touch $@

# The differential check: upstream's loops under upstream's own stack (Python 3.10, torch 2.2.2, transformers 4.40,
# in .venv-oracle) against this workflow's rules, answer for answer; writes benchmarks/ORACLE.md and fails on a
# difference without a named cause. PYTHON310 is the first Python 3.10 found (PATH, then pyenv's versions).
ORACLE_VENV ?= .venv-oracle
PYTHON310 ?= $(shell for p in python3.10 $$HOME/.pyenv/versions/3.10*/bin/python3.10 /usr/bin/python3.10; do \
	$$p -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null && echo $$p && break; done)

oracle-venv: $(ORACLE_VENV)/.installed

$(ORACLE_VENV)/.installed: benchmarks/oracle/requirements.txt
	@test -n "$(PYTHON310)" || { echo "make oracle needs Python 3.10, upstream's version (none on PATH or in pyenv):"; \
		echo "  pyenv install 3.10, or apt-get install python3.10-venv, or conda create -n py310 python=3.10,"; \
		echo "  then make oracle PYTHON310=/path/to/python3.10"; exit 1; }
	$(PYTHON310) -m venv $(ORACLE_VENV)
	$(ORACLE_VENV)/bin/pip install --quiet --no-compile -r benchmarks/oracle/requirements.txt
	touch $@

oracle: venv oracle-venv
	$(RUN) HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/oracle/run.py --oracle-python $(ORACLE_VENV)/bin/python

demo: venv
	$(RUN) HF_HUB_OFFLINE=1 $(BIN)/snakemake --configfile demo/config.yaml --directory demo-run \
		--profile profiles/local --cores $(CORES)
	@echo "Demo report: demo-run/results/report/index.html"

test: venv
	$(RUN) HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/python -m pytest -q

# the tests that do not run the workflow for real (pytest marker slow: the demo, Snakemake runs without -n)
test-fast: venv
	$(RUN) HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/python -m pytest -q -m "not slow"

paper: venv
	$(RUN) $(BIN)/snakemake --profile profiles/local

# the paper's protocol on current VLMs too (tables.modern, beyond the paper)
modern: venv
	$(RUN) $(BIN)/snakemake --profile profiles/local --config 'requested_tables=[modern]'

paper-dry-run: venv
	$(RUN) $(BIN)/snakemake -n

# jobs per rule and their GPU hours, and the cluster check below, before anything runs (extra snakemake arguments: ARGS="--configfile ...")
estimate: venv
	$(RUN) $(BIN)/python -m vlmrepro.estimate $(ARGS)

# every planned compute job's request (config: resources, cluster) against the partitions file, before submitting
# (ARGS="--configfile site.yaml")
cluster-check: venv
	$(RUN) $(BIN)/python -m vlmrepro.cluster $(ARGS)

# throughput benchmarks on this machine (CPU: tiny models, ratios only; on a GPU run benchmarks/gpu.sh)
bench: venv
	$(RUN) HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/generation.py
	$(RUN) HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/loglik.py
	$(RUN) HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/clip.py
	$(RUN) $(BIN)/python benchmarks/workflow.py dry-run

# what benchmarks/gpu.sh needs on a machine with only torch and transformers (the lent GPU image): open_clip and
# its two pure-Python dependencies, in .gpu-carry/ (ignored by git; carry it with the working tree), with any
# Python's pip: no project environment needed, seconds on a fresh clone
gpu-carry:
	$(PYTHON) -m pip install --quiet --no-deps --upgrade --target .gpu-carry \
		$$(grep -i '^open_clip_torch==' requirements.txt) ftfy wcwidth

# the prepared GPU run, on this machine's CPU with the tiny models (what the test suite runs)
bench-gpu-tiny: venv
	$(RUN) PYTHON=$(BIN)/python benchmarks/gpu.sh --size tiny

# the embedded demo from scratch: wall time and Snakemake's overhead beside its jobs
bench-demo: venv
	$(RUN) $(BIN)/python benchmarks/workflow.py demo --cores $(CORES)

# the demo's findings over world/training seeds 0-4 and 1 and 2 training threads: each check's minimum (~1.5 h here)
demo-robustness: venv
	$(RUN) $(BIN)/python benchmarks/demo_robustness.py --cores $(CORES)

lint: venv
	$(RUN) $(BIN)/snakemake --lint
	$(RUN) $(BIN)/snakefmt --check Snakefile rules/

clean-demo:
	rm -rf demo-run
