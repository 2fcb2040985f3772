# Two commands set everything up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
# Reinstall whenever the project's dependencies change.
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench bench-loop clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c constraints.txt torch torchvision
	$(PIP) install --quiet -c constraints.txt -e ".[dev]"
	# The default dataset; --no-deps because its declared dependencies pull in TensorFlow.
	$(PIP) install --quiet --no-deps animal-mnist==0.4
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/unlearn run $(ARGS)

# One pytest worker per core (tests/conftest.py gives each its share of the threads); worksteal
# hands a worker that ran dry the other's queued tests, so a long test at the end idles no core.
PYTEST_ARGS ?= -n auto --dist worksteal
test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check unlearn_cli tests
	$(BIN)/ruff format --check unlearn_cli tests

# docs/benchmark.md: every method x {class-wise, random 10%} x 3 seeds, on the full training set
# and on the memorising variant, then every method x {random4, classes3} streams of requests on
# both -> BENCHMARKS.md (its plots under docs/bench/); then the copy scan's detectors, speed and
# effect (python -m unlearn_cli.copies.bench, docs/copies.md) and every method's effect with the
# copies reported vs extended (sweep=bench_copies); the corrective benchmark (every method x
# poison/confusion x identified, sweep=bench_corrective, docs/corrective.md); then how fast `unlearn runs`
# lists 1,000 run folders (python -m unlearn_cli.tracking.bench, docs/tracking.md).
# A sweep exits 1 when a job did not complete; ngplus, run as published, diverges on this
# benchmark (docs/methods.md), and its rows say so: the report still follows.
BENCH_SWEEPS := bench bench_memorise bench_stream bench_stream_memorise
bench: install
	for sweep in $(BENCH_SWEEPS); do \
		$(BIN)/unlearn run -m sweep=$$sweep $(ARGS) || \
			echo "make bench: some jobs of sweep=$$sweep did not complete (its summary names them)"; \
	done
	$(BIN)/unlearn report --bench $(foreach sweep,$(BENCH_SWEEPS),"$$(ls -td outputs/$(sweep)/*/ | head -n 1)") \
		--markdown BENCHMARKS.md --csv benchmarks.csv --plots docs/bench
	$(MAKE) bench-loop
	$(BIN)/python -m unlearn_cli.copies.bench --markdown BENCHMARKS.md
	$(BIN)/unlearn run -m sweep=bench_copies $(ARGS) || echo "make bench: some copies jobs did not complete"
	$(BIN)/python -m unlearn_cli.copies.bench --sweep "$$(ls -td outputs/bench_copies/*/ | head -n 1)" \
		--markdown BENCHMARKS.md
	$(BIN)/unlearn run -m sweep=bench_corrective $(ARGS) || echo "make bench: some corrective jobs did not complete"
	$(BIN)/python -m unlearn_cli.corruption.bench "$$(ls -td outputs/bench_corrective/*/ | head -n 1)" \
		--markdown BENCHMARKS.md --csv benchmarks_corrective.csv --plots docs/bench
	$(BIN)/python -m unlearn_cli.tracking.bench --markdown BENCHMARKS.md

# Our training loop vs a hand-written PyTorch loop (images/s); updates its BENCHMARKS.md section.
bench-loop: install
	$(BIN)/python -m unlearn_cli.bench --markdown BENCHMARKS.md $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info
