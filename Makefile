# make demo | make test | make bench -- each creates .venv and installs the project when missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test bench lint venv clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check zoo tests benchmarks

test: $(STAMP) lint
	$(PY) -m pytest -q -m "not gpu" tests

demo: $(STAMP)
	$(PY) -m zoo.music.lm.demo

bench: $(STAMP)
	$(PY) benchmarks/attention_reference.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
