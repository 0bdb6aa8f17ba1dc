# hostpower: two commands on a fresh machine, `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test bench dist venv system-deps clean lint

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $(STAMP)

venv: $(STAMP)

system-deps:
	@bash scripts/install-system-deps.sh

demo: venv system-deps
	$(BIN)/hostpower demo

# Test files run on two workers, each file whole on one worker (about 10 min
# instead of 18 serially); PYTEST_WORKERS=0 runs them serially.
PYTEST_WORKERS ?= 2

test: venv system-deps
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

bench: venv system-deps
	$(BIN)/python -m bench

# The hostpower wheel (dist/hostpower-VERSION-py3-none-any.whl): what
# docs/deployment.md installs on engine machines and hosts.
dist: venv
	rm -rf build dist/hostpower-*.whl
	$(BIN)/python -m pip wheel -q --no-deps -w dist .
	@ls dist/hostpower-*.whl

clean:
	rm -rf $(VENV) var build dist .pytest_cache .hypothesis
