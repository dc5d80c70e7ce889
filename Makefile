# The two commands: `make lab` (full evaluation, writes results/) and `make test`.
# Each creates .venv with the machine's python3 and installs the project first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: lab test lint bench-micro clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# the notebook extra too: tests/test_notebooks.py executes the report's notebooks
$(VENV)/.test-installed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[test,notebooks]'
	touch $@

# System debuggers (gdb, lldb-19): installed as root, else the install commands are printed
# and the attacks that need them report `skipped`. The stamp is touched once all are present.
$(VENV)/.system-tools: scripts/setup-system-tools | $(PY)
	bash scripts/setup-system-tools --stamp $@

$(VENV)/.lab-installed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[test,notebooks]'
	touch $@ $(VENV)/.test-installed

# matrix and bench into one new run folder, then its report (results/<run-id>/report.html),
# which then replaces results/reference/ (summaries, figures, report, meta); dpi 72 keeps
# the committed page (its figures embedded) near 4 MB
lab: $(VENV)/.lab-installed $(VENV)/.system-tools
	$(PY) -m memcryptor_lab run --out results --exposure --bench quick
	$(PY) -m memcryptor_lab report results -p dpi=72 --publish results/reference

test: $(VENV)/.test-installed $(VENV)/.system-tools
	$(PY) -m ruff check memcryptor_lab attacks tests notebooks
	$(PY) -m pytest

# pytest-benchmark micro-benchmarks of hot paths; JSON in .benchmarks/
bench-micro: $(VENV)/.test-installed
	$(PY) -m pytest tests/bench -o addopts="" -p benchmark --benchmark-autosave -q

lint: $(VENV)/.test-installed
	$(PY) -m ruff check memcryptor_lab attacks tests notebooks
	$(PY) -m ruff format --check memcryptor_lab attacks tests notebooks

clean:
	rm -rf $(VENV) build *.egg-info
