from setuptools import find_packages, setup

setup(
    name="keras-at",
    version="0.1.0",
    description=(
        "Attention transfer (Zagoruyko & Komodakis, ICLR 2017) for Keras 3 / TensorFlow: "
        "activation- and gradient-based AT, KD and FitNets-style hints."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["keras_at", "keras_at.*"]),
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.16",
        "keras>=3.12",
        "tensorflow-datasets",
        "keras-cv",
        "tensorboard",
        "numpy",
        "matplotlib",
        "scikit-learn",
        "pillow",
    ],
    extras_require={
        # keras-cv's successor: `models.resnet(backbone="keras_hub")` and keras-hub backbones.
        # Tested with 0.32, which needs Python >= 3.11; the core package runs on 3.10.
        "hub": ["keras-hub>=0.32"],
        "test": ["pytest", "ruff", "keras-hub>=0.32"],
    },
)
