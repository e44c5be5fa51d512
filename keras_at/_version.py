"""The package's version, written here only: `keras_at.__version__` imports it and setup.py
parses this file (importing keras_at would import TensorFlow)."""

__version__ = "0.1.0"
