# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo
DEMO_SUBJECTS ?= 4
DEMO_SEED ?= 2026
CORES ?= all

.PHONY: install demo test test-fast lint format install-profile slurm-up slurm-down clean

$(BIN)/activate:
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "bolus needs Python >= 3.11 (found $$($(PYTHON) --version))"; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml $(BIN)/activate
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[workflow,dev]'
	# the learned models: PyTorch (this pin gives the CPU build here; GPU rules use
	# envs/models.yaml) and scikit-learn, outside pyproject's main dependencies
	$(BIN)/python -m pip install --quiet torch==2.13.0 scikit-learn
	touch $@

install: $(VENV)/.installed

$(DEMO_DIR)/participants.tsv: | $(VENV)/.installed
	$(BIN)/bolus simulate $(DEMO_DIR) --subjects $(DEMO_SUBJECTS) --seed $(DEMO_SEED)

demo: $(VENV)/.installed $(DEMO_DIR)/participants.tsv
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/snakemake --cores $(CORES) --profile profiles/local; \
	  status=$$?; [ $$status -eq 0 ] || [ $$status -eq 3 ] || exit $$status
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/snakemake --report results/report.html
	@echo "study table: $$(pwd)/results/metrics/study.tsv"
	@echo "report:      $$(pwd)/results/report.html"
	@$(BIN)/bolus summary results

test: $(VENV)/.installed
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m pytest

test-fast: $(VENV)/.installed
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m pytest -m "not slow"

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/snakefmt --check Snakefile rules tests/slurm
	$(BIN)/snakemake --lint --config participants=tests/data/lint_participants.tsv

format: $(VENV)/.installed
	$(BIN)/ruff check --fix src tests benchmarks scripts
	$(BIN)/ruff format src tests benchmarks scripts
	$(BIN)/snakefmt Snakefile rules tests/slurm

install-profile:
	mkdir -p $(HOME)/.config/snakemake/slurm
	cp profiles/slurm/config.yaml $(HOME)/.config/snakemake/slurm/config.yaml
	@echo "installed: snakemake --profile slurm now uses $(HOME)/.config/snakemake/slurm"

# A single-node Slurm on this machine (tests/test_slurm.py starts and stops it by itself);
# installs Debian's slurm-wlm and munge when missing (needs root).
slurm-up:
	bash .ci/slurm/cluster.sh start

slurm-down:
	bash .ci/slurm/cluster.sh stop

clean:
	rm -rf results .snakemake $(DEMO_DIR)
