# One command each: `make run` sets up and starts the bot, `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench clean

$(BIN)/imagine-bot: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

run: $(BIN)/imagine-bot
	$(BIN)/imagine-bot

test: $(BIN)/imagine-bot
	$(BIN)/pytest

lint: $(BIN)/imagine-bot
	$(BIN)/ruff check .
	$(BIN)/ruff format --check bot cogs storage
	$(BIN)/mypy

bench: $(BIN)/imagine-bot
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
