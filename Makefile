# One command sets everything up and runs: `make demo`, `make test`, `make lab`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast lab bench lint clean graphviz

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit("Python >= 3.11 is needed, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || bash scripts/ensure-venv.sh $(PYTHON) $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,dask]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	@touch $(STAMP)

graphviz:
	@bash scripts/ensure-graphviz.sh

setup: $(STAMP) graphviz

# The demo writes its files into demo-output/ (git-ignored) and prints where they are.
demo: setup
	$(BIN)/python -m dagger_nb.examples.demo --out demo-output

test: setup
	bash scripts/ensure-chromium.sh
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not browser and not slow"

lint: setup
	$(BIN)/ruff check dagger_nb tests bench
	$(BIN)/mypy

bench: setup
	$(BIN)/python bench/dag_overhead.py

lab: setup
	$(BIN)/jupyter lab notebooks/

clean:
	rm -rf $(VENV) build *.egg-info
