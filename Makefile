# Everything a fresh machine needs: `make demo` trains on Fashion-MNIST with all data and with DaP
# and compares the two, `make test` runs the test suite. Both create .venv on first use and reuse it after.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

# The demo (`droppick demo`): the recipe src/droppick/train/recipes/fashion-mnist-tiny_cnn.json, a tiny
# CNN on all 60,000 Fashion-MNIST images for 6 epochs, trained with all data and with DaP (drops, a pick,
# a drop), same seed; it ends with a table and runs/demo/demo.png.
# `droppick plan --recipe fashion-mnist-tiny_cnn-dap` prints DaP's compute before it runs;
# bench/demo_time.py measures the whole `make demo` on a fresh clone for the README.
DEMO_ARGS ?= --seed 0 --out runs/demo

.PHONY: install install-test install-docs install-mutate install-release data demo test lint docs bench mutate flake dist clean
install: $(VENV)/.installed  # the package and its core dependencies: all the demo needs

$(VENV)/.installed: pyproject.toml requirements/torch.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements/torch.txt
	$(PY) -m pip install -q -e .
	touch $@

install-test: $(VENV)/.installed-test  # + the test extra (the optional integrations the tests cover)

$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install-docs: $(VENV)/.installed-docs  # + the docs extra (mkdocs, mkdocs-material, mkdocstrings)

$(VENV)/.installed-docs: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[docs]'
	touch $@

data: $(FASHION_MNIST)

$(FASHION_MNIST):
	@if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	else echo "Fashion-MNIST is missing: run 'sudo apt-get install dataset-fashion-mnist' (Debian/Ubuntu)"; exit 1; fi

# rm: both runs train anew (`droppick demo` reuses finished runs in its folder, as `compare` does)
demo: install data
	rm -rf runs/demo
	$(VENV)/bin/droppick demo $(DEMO_ARGS)

# Two pytest workers (pytest-xdist): many tests wait on child processes (torchrun, SIGKILL and
# resume, the GPU script's CPU run), so on 2 cores the suite takes about 6 minutes instead of 10.
# --dist loadfile keeps a file's tests, and its module-scoped fixtures, in one worker; --durations lists
# the slowest tests, so a CI log shows which ones hold the suite near its 10-minute budget.
TEST_WORKERS ?= 2
test: install-test
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=15

# ruff's checks for mistakes (the rule set and why: [tool.ruff] in pyproject.toml); .ci/run runs it.
lint: install-test
	$(PY) -m ruff check src tests bench experiments examples docs

# The documentation site (mkdocs.yml, docs/) into site/, strict: a broken link or reference, a missing
# snippet or a docstring mkdocstrings cannot render fails it (tests/test_docs.py runs the same build).
docs: install-docs
	$(PY) -m mkdocs build --strict

# The benchmarks of bench/README.md (about 15 minutes on 2 cores): writes bench/results.md and the
# results block of bench/README.md.
bench: install-test data
	$(PY) bench/run_all.py

# Mutation testing of the DaP core (schedule, selection, sampler, engine, policies) against its fast
# tests: mutmut from the `mutate` extra, about 40 minutes on 2 cores at nice 19, so not part of CI.
# Writes bench/mutation.md (score, survivors, command, date, commit, machine); exits 1 below 90 %.
MUTATE_CHILDREN ?= 2
install-mutate: $(VENV)/.installed-mutate

$(VENV)/.installed-mutate: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[mutate]'
	touch $@

mutate: install-mutate
	$(PY) bench/mutation_report.py --run --children $(MUTATE_CHILDREN)

# The test files that start several processes (those using tests/launch.py), run as `make test` runs
# them, FLAKE_RUNS times in a row: bench/flake.md counts each test's failures, with command, date,
# commit, machine and load. About 5 minutes a run on 2 cores, so not part of CI; exits 1 on any failure.
FLAKE_RUNS ?= 20
flake: install-test
	$(PY) bench/flake.py --runs $(FLAKE_RUNS) --workers $(TEST_WORKERS)

# The sdist and the wheel into dist/, the wheel built from the sdist (so the sdist is known to hold what a
# build needs), then twine's check of their metadata and README. --no-isolation builds with the venv's
# setuptools (the release extra) instead of downloading one; tests/test_packaging.py builds the same way
# and installs the wheel into a fresh venv. Releasing: docs/guide/development.md.
install-release: $(VENV)/.installed-release

$(VENV)/.installed-release: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[release]'
	touch $@

dist: install-release
	rm -rf dist
	$(PY) -m build --no-isolation --outdir dist
	$(PY) -m twine check --strict dist/*

clean:
	rm -rf $(VENV) runs site .pytest_cache mutants dist build
