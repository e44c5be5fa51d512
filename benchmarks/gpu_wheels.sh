#!/usr/bin/env bash
# The wheels benchmarks/gpu.sh installs on an offline GPU machine, downloaded here into
# .gpu-wheels/ (git-ignored; copy it along with the repository), and Fashion-MNIST's four .gz
# files (30 MB), copied into .gpu-wheels/fashion-mnist/ from where keras_at.data finds them
# here (Debian's /usr/share/datasets/fashion-mnist from `apt-get install dataset-fashion-mnist`,
# or ~/.keras/datasets/fashion-mnist), for gpu.sh's Table 1 run.
#
# That machine is expected to have JAX with CUDA (and so numpy, ml_dtypes, scipy, opt_einsum, JAX's own
# dependencies) but neither TensorFlow nor Keras, and downloads nothing. keras-at on JAX needs
# Keras and Keras's other dependencies, all imported by `import keras` or the benchmark: absl-py,
# namex, packaging, rich (with markdown-it-py, mdurl, pygments), optree (with
# typing-extensions) and h5py. jax and jaxlib are never carried: the image's CUDA build stays.
# Pure-Python wheels serve every CPython; h5py and optree are compiled, so they come for each
# CPython from 3.11 to 3.14 (the image's is unknown; Keras >= 3.14, which keras_at.models'
# BatchNorm needs, needs Python >= 3.11, as JAX >= 0.7 does). The pins are the versions the
# no-TensorFlow virtual environment ran the benchmark with.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-.gpu-wheels}
PURE=(keras==3.15.1 absl-py==2.5.1 namex==0.1.0 packaging==26.4 rich==15.0.0
      markdown-it-py==4.3.0 mdurl==0.1.2 pygments==2.21.0 typing-extensions==4.16.0)
COMPILED=(h5py==3.16.0 optree==0.20.0)
mkdir -p "$DEST"
for spec in "${PURE[@]}"; do
    python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$DEST" "$spec"
done
for version in 3.11 3.12 3.13 3.14; do
    python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$DEST" \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux_2_28_x86_64 --implementation cp \
        --python-version "$version" --abi "cp${version/./}" "${COMPILED[@]}"
done
FILES=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz
       t10k-labels-idx1-ubyte.gz)
KERAS_CACHE=${KERAS_HOME:-$HOME/.keras}/datasets
for SOURCE in /usr/share/datasets/fashion-mnist "$KERAS_CACHE/fashion-mnist"; do
    if [ -f "$SOURCE/${FILES[0]}" ]; then
        mkdir -p "$DEST/fashion-mnist"
        for f in "${FILES[@]}"; do cp "$SOURCE/$f" "$DEST/fashion-mnist/"; done
        break
    fi
done
if [ ! -f "$DEST/fashion-mnist/${FILES[0]}" ]; then
    echo "Fashion-MNIST is not here: apt-get install dataset-fashion-mnist (or put its four .gz"
    echo "files in ~/.keras/datasets/fashion-mnist), then run this again: gpu.sh's Table 1"
    echo "needs it."
    exit 1
fi
ls -l "$DEST" "$DEST/fashion-mnist"
du -sh "$DEST"
