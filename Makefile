# hear-features: the two commands a newcomer needs are `make demo` and `make test`.
# Both create .venv with the CPU extra on first use; later runs skip the install
# unless pyproject.toml changed. `make test` and `make bench` also install the ray
# extra (the Ray executor is tested and measured); `make demo` does without it.

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
EXTRAS ?= cpu,dev
TEST_EXTRAS ?= $(EXTRAS),ray
comma  := ,
stamp   = $(VENV)/.installed-$(subst $(comma),-,$(1))
STAMP  := $(call stamp,$(EXTRAS))
TEST_STAMP := $(call stamp,$(TEST_EXTRAS))

.PHONY: install install-test demo test bench bench-gpu lint reliability serve clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "hear-features needs Python >= 3.11, found " + sys.version.split()[0]'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP) $(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[$(subst -,$(comma),$(patsubst $(VENV)/.installed-%,%,$@))]"
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP)

install-test: $(TEST_STAMP)

demo: install
	$(BIN)/hear-features demo

# Test files are spread over TEST_WORKERS processes, each file whole in one of them
# (module fixtures such as a materialised repo are built once).
TEST_WORKERS ?= 2
test: install-test
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

bench: install-test
	$(BIN)/python bench/embed.py
	$(BIN)/python bench/encoder.py
	$(BIN)/python bench/materialize.py
	$(BIN)/python bench/index.py
	$(BIN)/python bench/search.py
	$(BIN)/python bench/api.py
	$(BIN)/python bench/startup.py
	$(BIN)/python bench/soak.py
	$(BIN)/python bench/probe.py
	$(BIN)/python bench/explorer.py

# On a machine with an NVIDIA GPU: its own virtualenv with the gpu extra, then encoder
# clips/s and faiss-gpu vs faiss-cpu at 1M vectors (under 8 minutes). See BENCHMARKS.md.
bench-gpu:
	scripts/bench_gpu.sh

lint: install-test
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
