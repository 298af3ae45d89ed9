# Everything a fresh machine needs: `make demo` runs a DaP training on Fashion-MNIST,
# `make test` runs the test suite. Both create .venv on first use and reuse it after.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

# The demo: a small CNN on all 60,000 Fashion-MNIST images for 12 epochs, DaP on the paper's
# CIFAR-10 schedule scaled down (Section 4.3.1 scales it the same way for ImageNet): 2 warm-up
# epochs, then keep 70% of the subset after every epoch, pick all data up at the LR decays 6 and 9.
# `droppick plan --epochs 12 --warmup 2 --interval 1 --keep 0.7 --reuse-at 6,9 --num-samples 60000`
# prints its compute before it runs.
DEMO_ARGS ?= --model small_cnn --policy dap --epochs 12 --warmup 2 --interval 1 --keep 0.7 \
	--reuse-at 6,9 --lr 0.05 --seed 0 --out runs/demo

.PHONY: install data demo test clean
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements/torch.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements/torch.txt
	$(PY) -m pip install -q -e '.[test]'
	touch $@

data: $(FASHION_MNIST)

$(FASHION_MNIST):
	@if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	else echo "Fashion-MNIST is missing: run 'sudo apt-get install dataset-fashion-mnist' (Debian/Ubuntu)"; exit 1; fi

demo: install data
	rm -rf runs/demo
	$(VENV)/bin/droppick train $(DEMO_ARGS)

test: install
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
