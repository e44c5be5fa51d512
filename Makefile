# Two commands on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
export KERAS_BACKEND := tensorflow
export TF_CPP_MIN_LOG_LEVEL := 2
# oneDNN convolutions also on CPUs where TensorFlow leaves them off (no AVX-512): a WRN training step 1.8x faster here.
export TF_ENABLE_ONEDNN_OPTS ?= 1

.PHONY: demo test lint bench clean

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

demo: $(VENV)/.installed
	$(PY) examples/reproduce.py --quick

test: $(VENV)/.installed
	$(PY) -m ruff check keras_at examples tests benchmarks
	$(PY) -m pytest -q

bench: $(VENV)/.installed
	$(PY) benchmarks/throughput.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
