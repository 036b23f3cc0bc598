# hear-features: the two commands a newcomer needs are `make demo` and `make test`.
# Both create .venv with the CPU extra on first use; later runs skip the install
# unless pyproject.toml changed.

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
EXTRAS ?= cpu,dev
comma  := ,
STAMP  := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

.PHONY: install demo test bench lint reliability serve clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "hear-features needs Python >= 3.11, found " + sys.version.split()[0]'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP)

demo: install
	$(BIN)/hear-features demo

test: install
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python bench/embed.py
	$(BIN)/python bench/materialize.py
	$(BIN)/python bench/index.py
	$(BIN)/python bench/api.py
	$(BIN)/python bench/soak.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy hear_features index api
	$(BIN)/python scripts/audit_dependencies.py

# Regenerates RELIABILITY.md: the bad-input corpus, the crash tests (10 kills per
# scenario), a 3-minute soak and the dependency audit (about 10 minutes).
reliability: install
	$(BIN)/python scripts/reliability_report.py

serve: install
	$(BIN)/hear-features serve --repo $(or $(REPO),demo-output/feature_repo)

clean:
	rm -rf $(VENV) demo-output .pytest_cache .mypy_cache .ruff_cache
