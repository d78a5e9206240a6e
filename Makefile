# Every target installs what it needs, so each works from a clean clone.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
STAMP := .make-installed

.PHONY: install fixtures demo typecheck test test-slow bench clean

$(STAMP): pyproject.toml hfstream/quant/_q8_0.c hfstream/quant/_kquants.c
	$(PIP) install -q -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

fixtures: install
	$(PYTHON) -m fixtures.build

# Start the bundled fixture Hub on 127.0.0.1, convert a fixture model through it, stop the Hub.
demo: fixtures
	$(PYTHON) -m fixtures.demo

# mypy over the package (its type hints ship with it: py.typed); part of every `make test`
typecheck: install
	$(PYTHON) -m mypy hfstream

# The test files spread over the cores (one worker a core, a whole file to a worker: its module
# fixtures and its conversion runs are shared by its tests); TEST_JOBS=0 runs them in this process.
TEST_JOBS ?= auto
XDIST = $(if $(filter 0,$(TEST_JOBS)),-p no:xdist,-n $(TEST_JOBS) --dist loadfile)

test: fixtures typecheck
	$(PYTHON) -m pytest -q $(XDIST)

# Real llama.cpp runs (builds llama-cpp-python from source once, ~4 minutes) and other slow checks.
test-slow: fixtures
	$(PIP) install -q 'llama-cpp-python==0.3.36'
	$(PYTHON) -m pytest -q -m slow $(XDIST)

# Convert a 1.5 GB model through a throttled fixture Hub, with the reference side by side; then K-quants,
# many small tensors, several outtypes in one pass, FP8 at DeepSeek-V3's widths (bench/README.md).
# make bench BENCH_ARGS='--quick --skip-reference' for a smoke run.
bench: install
	$(PYTHON) -m bench.run $(BENCH_ARGS)
	$(PYTHON) -m bench.kquant $(BENCH_KQUANT_ARGS)
	$(PYTHON) -m bench.encoders
	$(PYTHON) -m bench.many $(BENCH_MANY_ARGS)
	$(PYTHON) -m bench.multi $(BENCH_MULTI_ARGS)
	$(PYTHON) -m bench.fp8wide $(BENCH_FP8_ARGS)

clean:
	rm -rf fixtures/repos demo-out bench/.cache $(STAMP) .pytest_cache
