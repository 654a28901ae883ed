# Every target sets itself up: a virtualenv in .venv with requirements.txt installed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

DEMO_OUT ?= demo_out

.PHONY: test test-slurm demo venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	touch $@

test: venv
	$(PY) -m pytest -q tests

# Phase 1 (XRM) -> phase 2 (MAT and ERM) -> results table, on the built-in Synthetic dataset.
demo: venv
	$(PY) main.py --phase 1 --datasets Synthetic --num_hparams_combs 4 --out_dir $(DEMO_OUT)
	$(PY) main.py --phase 2 --datasets Synthetic --algorithms MAT ERM --group_labels no \
		--num_hparams_combs 4 --out_dir $(DEMO_OUT)
	$(PY) XRM/read_results.py --dir $(DEMO_OUT) --datasets Synthetic --group_labels no

# The SLURM tests, inside a throw-away one-node cluster (root, Debian 12; see tests/slurm/cluster.sh).
# XRM_REQUIRE_SLURM turns a skipped SLURM test into a failure.
SLURM_RUN_DIR ?= .slurm_cluster
test-slurm: venv
	rm -rf $(SLURM_RUN_DIR)
	tests/slurm/cluster.sh $(SLURM_RUN_DIR) -- env XRM_REQUIRE_SLURM=1 $(PY) -m pytest -q tests/slurm

clean:
	rm -rf $(VENV) .pytest_cache
