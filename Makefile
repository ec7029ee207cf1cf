# Two commands for a fresh Debian machine with python3:
#   make run    install into .venv, show the first-contact loop, then serve SMTP on config.toml
#   make test   install into .venv and run every check (ruff, ruff format, mypy, pytest)

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test lint typecheck pytest clean

$(STAMP): pyproject.toml
	scripts/bootstrap-venv.sh $(PYTHON) $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	scripts/demo.sh $(BIN)
	scripts/serve-demo.sh $(BIN)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

test: lint typecheck pytest

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
