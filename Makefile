# oi_ml — two commands on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXCHANGES ?= NSE BSE
DAYS ?= 60
SEED ?= 0
RETRAIN_FLAGS ?=
export OI_ML_DATA_DIR ?= $(CURDIR)/data
export OI_ML_REPORTS_DIR ?= $(CURDIR)/reports

.PHONY: install demo test test-all check-sync bench lab packs clean-data lint

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): $(BIN)/python setup.py settings.ini
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name oi_ml --display-name "oi_ml (.venv)" >/dev/null
	touch $(STAMP)

install: $(STAMP)

## demo: simulate both exchanges, then the whole retrain pipeline per exchange (dataset, features, labels, training,
## AutoML, backtests, gate, approval pack); packs and reports/index.html under reports/
demo: install
	@for ex in $(EXCHANGES); do $(BIN)/oi-ml simulate --exchange $$ex --days $(DAYS) --seed $(SEED) --signal-strength 1.0 || exit 1; done
	@for ex in $(EXCHANGES); do $(BIN)/oi-ml retrain --exchange $$ex $(RETRAIN_FLAGS) || exit 1; done
	$(BIN)/oi-ml datasets
	@echo "approval packs: $(OI_ML_REPORTS_DIR)/index.html"

## packs: re-render the latest candidate's approval pack of every exchange, in parallel processes
packs: install
	@pids=""; for ex in $(EXCHANGES); do $(BIN)/oi-ml pack --exchange $$ex --run latest & pids="$$pids $$!"; done; \
	 rc=0; for p in $$pids; do wait $$p || rc=1; done; exit $$rc

## test: notebooks clean and exported, then pytest (which runs nbdev_test per notebook)
test: install check-sync
	$(BIN)/pytest -q -m "not slow" -n 2

## test-all: also the slow tests and the notebooks' `#| slow` cells (tests/test_notebooks.py reads OI_ML_SLOW)
test-all: install check-sync
	OI_ML_SLOW=1 $(BIN)/pytest -q -n 2

## check-sync: fail when nbdev_clean or nbdev_export would change a file
check-sync: install
	@snap() { find nbs oi_ml -type f \( -name '*.py' -o -name '*.ipynb' \) -not -path '*/.ipynb_checkpoints/*' -not -path '*/__pycache__/*' | sort | xargs sha256sum; }; \
	 before="$$(snap)"; \
	 $(BIN)/nbdev_clean >/dev/null && $(BIN)/nbdev_clean --fname oi_ml/templates >/dev/null && $(BIN)/nbdev_export >/dev/null || exit 1; \
	 after="$$(snap)"; \
	 if [ "$$before" != "$$after" ]; then echo "nbdev_clean/nbdev_export changed files (commit the notebook and the exported module together):"; \
	   diff <(echo "$$before") <(echo "$$after"); exit 1; fi; echo "notebooks clean, library in sync"

lint: install
	$(BIN)/ruff check oi_ml

bench: install
	@mkdir -p bench/results; for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

lab: install
	$(BIN)/jupyter lab --notebook-dir=$(CURDIR)

clean-data:
	rm -rf data/* reports/*; touch data/.gitkeep reports/.gitkeep
