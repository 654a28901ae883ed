# Every target sets itself up: a virtualenv in .venv with requirements.txt installed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

DEMO_OUT ?= demo_out

.PHONY: test demo venv clean

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

clean:
	rm -rf $(VENV) .pytest_cache
