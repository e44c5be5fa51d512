#!/usr/bin/env bash
# The JAX throughput benchmark on a GPU machine that has JAX with CUDA but neither TensorFlow nor
# Keras, and no internet. Where the package registry is reachable, build the wheels first, copy
# the repository with .gpu-wheels/ to the GPU machine, and run the script from its root:
#
#     bash benchmarks/gpu_wheels.sh            # once, online: .gpu-wheels/ (27 MB)
#     bash benchmarks/gpu.sh [--out DIR]       # on the GPU machine
#
# It prints nvidia-smi and jax.devices(), installs the wheels into .gpu-site/ (pip --target
# --no-deps: no virtual environment, the machine's jax, numpy and ml_dtypes untouched), then runs
# `throughput.py --backend jax` at batch 128 and at batch 256 (every step XLA-compiled, JAX's
# default) and writes both tables to throughput_gpu.md in DIR (default: docs/). Each run is
# bounded (rounds by --time-limit, the whole process, compilation included, by `timeout`) so
# that the script ends within 8 minutes.
#
# KERAS_AT_GPU_TINY=1 runs tiny settings instead (one batch of 8 16x16 images, 2 rounds), to
# test the script end to end on a CPU with a CPU jax.
set -uo pipefail
cd "$(dirname "$0")/.."
START=$SECONDS
PY=${PYTHON:-python3}
WHEELS=${WHEELS:-.gpu-wheels}
SITE=$PWD/.gpu-site
DEST=docs
while [ $# -gt 0 ]; do
    case "$1" in
        --out) DEST=${2:?--out needs a folder}; shift 2 ;;
        --out=*) DEST=${1#--out=}; shift ;;
        *) echo "usage: bash benchmarks/gpu.sh [--out DIR]" >&2; exit 2 ;;
    esac
done
if [ "${KERAS_AT_GPU_TINY:-0}" = 1 ]; then
    BATCHES=(8); SIZE=16; ROUNDS=2; STEPS=1; LIMIT=5; BUDGET=170
else
    # About 60 s of timing per batch; the rest of each run's share is import and compilation.
    BATCHES=(128 256); SIZE=32; ROUNDS=30; STEPS=5; LIMIT=60; BUDGET=450
fi

echo "== nvidia-smi"
nvidia-smi || echo "(nvidia-smi: not available)"
echo "== $PY"
"$PY" --version
"$PY" -c "import sys; sys.exit(sys.version_info < (3, 11))" || {
    echo "Python >= 3.11 needed: Keras >= 3.14 (keras_at.models' BatchNorm) needs it."
    exit 1
}
"$PY" -c "import jax; print('jax', jax.__version__, jax.devices())" || {
    echo "jax does not import with $PY: this script runs on a machine with JAX installed."
    exit 1
}

echo "== installing keras and its dependencies from $WHEELS into $SITE"
if [ ! -d "$WHEELS" ]; then
    echo "No $WHEELS: make it with benchmarks/gpu_wheels.sh and carry it along."
    exit 1
fi
rm -rf "$SITE"
"$PY" -m pip install --quiet --disable-pip-version-check --no-index --no-deps \
    --find-links "$WHEELS" --target "$SITE" keras absl-py h5py namex optree packaging rich \
    markdown-it-py mdurl pygments typing-extensions || exit 1
# The carried packages come before the image's own copies; keras_at from this checkout.
export PYTHONPATH="$SITE:$PWD"
export KERAS_BACKEND=jax
"$PY" -c "import keras, keras_at; print('keras', keras.__version__, 'on', keras.backend.backend())" \
    || exit 1

mkdir -p "$DEST"
TABLES=$(mktemp -d)
STATUS=0
for i in "${!BATCHES[@]}"; do
    B=${BATCHES[$i]}
    # This run's share of what is left of the budget: the remaining runs share the rest.
    LEFT=$((BUDGET - (SECONDS - START)))
    SHARE=$((LEFT / (${#BATCHES[@]} - i)))
    echo "== batch $B: throughput.py --backend jax (at most ${SHARE} s)"
    timeout "$SHARE" "$PY" benchmarks/throughput.py --backend jax --batch "$B" --size "$SIZE" \
        --rounds "$ROUNDS" --steps "$STEPS" --time-limit "$LIMIT" --no-torch \
        --out "$TABLES/b$B.md"
    CODE=$?
    if [ "$CODE" -ne 0 ]; then
        echo "batch $B: throughput.py ended with status $CODE (124: out of its ${SHARE} s)"
        STATUS=1
    fi
done

OUTFILE="$DEST/throughput_gpu.md"
for B in "${BATCHES[@]}"; do
    if [ -f "$TABLES/b$B.md" ]; then
        printf '### batch %s\n\n' "$B" >> "$TABLES/all.md"
        cat "$TABLES/b$B.md" >> "$TABLES/all.md"
        echo >> "$TABLES/all.md"
    fi
done
if [ -s "$TABLES/all.md" ]; then
    [ -f "$OUTFILE" ] && echo "$OUTFILE exists; overwriting it with this run's tables."
    mv "$TABLES/all.md" "$OUTFILE"
    echo "== wrote $OUTFILE after $((SECONDS - START)) s"
else
    echo "== no table to write after $((SECONDS - START)) s"
    STATUS=1
fi
rm -rf "$TABLES"
exit "$STATUS"
