# `make test` and `make demo` create .venv and install the project into it when missing or out of date.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo bench bench-quick install clean docs

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Two pytest workers (the suite's budget is 10 minutes on 2 cores); --dist loadfile keeps each test file on one
# worker, so a module's fixtures (a torchrun launch, a trained run) run once and its tests never race each other.
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile
	$(PY) -m mypy
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --quiet
	$(VENV)/bin/ssdaudit check

demo: $(STAMP)
	$(PY) examples/seed_story.py

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

# Each benchmark's --quick smoke run (tiny sizes, a few minutes in all), into out/bench/quick/.
bench-quick: $(STAMP)
	$(PY) benchmarks/run_all.py --quick

clean:
	rm -rf $(VENV) out .pytest_cache

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs serve
