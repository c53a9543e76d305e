# The README's commands, for those who reach for make (seed 002 asks for `make run`).
.PHONY: run test test-all bench dev-kafka install docs compiled pure

PYTHON ?= python3

install:
	$(PYTHON) -m pip install -e '.[test]'

# Install and start Herald on http://127.0.0.1:8000 with embedded defaults.
run:
	$(PYTHON) -m pip install -e . && herald serve

# Install and run the default test suite (the README's test command).
test:
	$(PYTHON) -m pip install -e '.[test]' && $(PYTHON) -m pytest

# Everything CI runs (.ci/run, kept in step by tests/test_architecture.py): the default suite, then
# the tests behind every marker.
test-all: test
	$(PYTHON) -m pytest -m 'slow or kafka or browser or postgres' -n 0

# The documentation site (mkdocs.yml, docs/) on http://127.0.0.1:8080, rebuilt as pages change; the
# test behind the slow marker (tests/test_docs.py) builds it with --strict.
docs:
	$(PYTHON) -m pip install -e '.[docs]' && $(PYTHON) -m mkdocs serve --dev-addr 127.0.0.1:8080

# The optional compiled build (docs/operations/compiled.md): the engine's hot path compiled with mypyc, in
# place (extension modules next to their .py); `herald --version` says which runs. `make pure` undoes it.
compiled:
	$(PYTHON) -m pip install -e '.[compiled]' && $(PYTHON) mypyc_build.py

pure:
	$(PYTHON) mypyc_build.py --clean

# The benchmarks (figures in bench/RESULTS.md).
bench:
	$(PYTHON) -m bench.engine
	$(PYTHON) -m bench.memory
	$(PYTHON) -m bench.journal
	$(PYTHON) -m bench.http

# A Kafka-protocol broker (Tansu) on 127.0.0.1:9092, in memory, for the CRM plugin.
dev-kafka:
	herald dev-kafka --port 9092
