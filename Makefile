# Two commands on a fresh machine: `make demo` and `make test`. `make smoke` tests the wheel;
# `make test-fast` is the suite without the tests marked slow; `make docs` builds the guide and
# the API reference into site/ (docs/development.md).
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
WHEELS ?= .wheels
export KERAS_BACKEND := tensorflow
export TF_CPP_MIN_LOG_LEVEL := 2
# oneDNN convolutions also on CPUs where TensorFlow leaves them off (no AVX-512): a WRN training step 1.8x faster here.
export TF_ENABLE_ONEDNN_OPTS ?= 1

.PHONY: demo demo-jax test test-fast test-jax smoke docs lint bench clean

# Every dependency is fetched once, as a wheel kept in $(WHEELS), and installed from there: make
# smoke installs the package into a second, fresh venv from the same wheels without fetching
# them again (pip's HTTP cache stays empty behind a registry proxy that sends no cache headers).
$(VENV)/.installed: setup.py keras_at/_version.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip wheel --quiet --wheel-dir $(WHEELS) --find-links $(WHEELS) ".[test]" "setuptools>=77"
	rm -f $(WHEELS)/keras_at-*.whl
	$(PY) -m pip install --quiet --no-index --find-links $(WHEELS) -e ".[test]"
	touch $@

demo: $(VENV)/.installed
	$(PY) examples/reproduce.py --quick

test: $(VENV)/.installed
	$(PY) -m ruff check keras_at examples tests benchmarks scripts setup.py
	$(PY) -m pytest -q --durations=15

# Without the tests that launch processes, train for epochs or build ImageNet-size networks.
test-fast: $(VENV)/.installed
	$(PY) -m ruff check keras_at examples tests benchmarks scripts setup.py
	$(PY) -m pytest -q -m "not slow"

# The JAX backend where TensorFlow is not installed: a second venv, from the same wheels, with
# only setup.py's REQUIRES_WITHOUT_TENSORFLOW, jax[cpu], pytest and pytest-timeout, and keras-at
# without its dependencies (tests/test_release.py checks this list against setup.py's).
JAX_VENV ?= .venv-jax
JAX_PY := $(JAX_VENV)/bin/python
JAX_REQUIREMENTS := "keras>=3.12" numpy matplotlib scikit-learn pillow "jax[cpu]" pytest pytest-timeout

$(JAX_VENV)/.installed: setup.py keras_at/_version.py
	rm -rf $(JAX_VENV)
	$(PYTHON) -m venv $(JAX_VENV)
	$(JAX_PY) -m pip install --quiet --upgrade pip
	$(JAX_PY) -m pip wheel --quiet --wheel-dir $(WHEELS) --find-links $(WHEELS) $(JAX_REQUIREMENTS) "setuptools>=77"
	$(JAX_PY) -m pip install --quiet --no-index --find-links $(WHEELS) $(JAX_REQUIREMENTS)
	$(JAX_PY) -m pip install --quiet --no-index --find-links $(WHEELS) --no-deps -e .
	touch $@

# The quick start's demo on JAX, in $(JAX_VENV) where TensorFlow is not installed: no TensorBoard
# logs (the run says so), the same results.md.
demo-jax: $(JAX_VENV)/.installed
	KERAS_BACKEND=jax $(JAX_PY) examples/reproduce.py --quick

# tests/jax on the JAX backend, over 2 CPU devices (keras.distribution), without TensorFlow.
test-jax: $(JAX_VENV)/.installed
	@if $(JAX_PY) -c "import tensorflow" 2>/dev/null; then \
		echo "$(JAX_VENV) must not have TensorFlow, but it imports; pip show tensorflow says:"; \
		$(JAX_PY) -m pip show tensorflow; exit 1; fi
	KERAS_BACKEND=jax XLA_FLAGS=--xla_force_host_platform_device_count=2 \
		$(JAX_PY) -m pytest -q tests/jax

# The wheel as a user gets it: built, installed alone into a fresh venv in a temporary folder,
# imported and fitted from there (scripts/smoke_test.py).
smoke: $(VENV)/.installed
	$(PY) scripts/smoke_test.py --find-links $(WHEELS)

# The guide (docs/) and the API reference generated from the docstrings, into site/ (mkdocs.yml):
# the docs extra installed into $(VENV) from the same wheel folder. --strict: a warning (a broken
# link, a docstring that does not parse) fails the build.
$(VENV)/.docs-installed: $(VENV)/.installed setup.py
	$(PY) -m pip wheel --quiet --wheel-dir $(WHEELS) --find-links $(WHEELS) ".[docs]"
	rm -f $(WHEELS)/keras_at-*.whl
	$(PY) -m pip install --quiet --no-index --find-links $(WHEELS) -e ".[docs]"
	touch $@

docs: $(VENV)/.docs-installed
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

bench: $(VENV)/.installed
	$(PY) benchmarks/throughput.py

clean:
	rm -rf $(VENV) $(JAX_VENV) $(WHEELS) build dist site *.egg-info .pytest_cache
