import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent


def read_version():
    """`__version__` parsed from keras_at/_version.py, its one home (no import: TensorFlow)."""
    text = (HERE / "keras_at" / "_version.py").read_text(encoding="utf-8")
    match = re.search(r"""^__version__ = ["']([^"']+)["']$""", text, re.MULTILINE)
    if match is None:
        raise RuntimeError("keras_at/_version.py has no line `__version__ = \"X.Y.Z\"`")
    return match.group(1)


# What the JAX backend needs: the Distiller, models, losses and callbacks on numpy arrays. A JAX
# user without TensorFlow installs these and `pip install --no-deps` keras-at (README, "Without
# TensorFlow: JAX"); `make test-jax` does the same (tests/test_release.py checks both lists).
REQUIRES_WITHOUT_TENSORFLOW = ["keras>=3.12", "numpy", "matplotlib", "scikit-learn", "pillow"]
# TensorFlow and what only its parts use: keras_at.data's tf.data pipelines and datasets,
# AttentionMapLogger's TensorBoard events, models.resnet's keras-cv backbones.
TENSORFLOW_REQUIRES = ["tensorflow>=2.16", "tensorflow-datasets", "keras-cv", "tensorboard"]

setup(
    name="keras-at",
    version=read_version(),
    description=(
        "Attention transfer (Zagoruyko & Komodakis, ICLR 2017) for Keras 3 / TensorFlow: "
        "activation- and gradient-based AT, KD and FitNets-style hints."
    ),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["keras_at", "keras_at.*"]),
    # Non-Python files inside keras_at/ (MANIFEST.in grafts them) go into the wheel too.
    include_package_data=True,
    # An SPDX expression (License-Expression, PEP 639): it replaces the License classifier,
    # which setuptools >= 77 deprecates.
    license_expression="Apache-2.0",
    license_files=["LICENSE"],
    keywords=[
        "attention transfer",
        "knowledge distillation",
        "keras",
        "tensorflow",
        "deep learning",
        "model compression",
        "wide resnet",
    ],
    project_urls={"Paper": "https://arxiv.org/abs/1612.03928"},
    classifiers=[
        "Development Status :: 3 - Alpha",
        "Intended Audience :: Developers",
        "Intended Audience :: Science/Research",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        # CI's Python; tests/test_release.py checks the one it runs on is listed.
        "Programming Language :: Python :: 3.11",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Topic :: Scientific/Engineering :: Image Recognition",
    ],
    # 3.11: the only Python the tests run on, and keras-hub 0.32 (the test extra) needs it.
    python_requires=">=3.11",
    install_requires=TENSORFLOW_REQUIRES + REQUIRES_WITHOUT_TENSORFLOW,
    extras_require={
        # keras-cv's successor: `models.resnet(backbone="keras_hub")` and keras-hub backbones.
        # Tested with 0.32, which needs Python >= 3.11.
        "hub": ["keras-hub>=0.32"],
        # build and uv: `make smoke` builds the wheel and sdist, uv installs it in a fresh venv.
        # jax[cpu]: tests/test_backends.py compares a step on JAX with TensorFlow's.
        # ai-edge-litert: LiteRT's interpreter, which replaces tf.lite.Interpreter (deprecated
        # in TensorFlow 2.21), runs the exported TFLite files in tests/test_export.py; it has
        # no Windows wheel, where the tests run TensorFlow's interpreter instead.
        # pytest-timeout: pyproject.toml's per-test time limit.
        "test": ["pytest", "pytest-timeout", "ruff", "keras-hub>=0.32", "build", "uv",
                 "jax[cpu]", "ai-edge-litert>=2.3; platform_system != 'Windows'"],
        # `make docs`: the guide in docs/ and the API reference that mkdocstrings generates from
        # the docstrings (mkdocs.yml). mkdocs 2 drops the plugins these use.
        "docs": ["mkdocs>=1.6,<2", "mkdocs-material>=9.5", "mkdocstrings[python]>=1.0"],
    },
)
