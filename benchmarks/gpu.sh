#!/usr/bin/env bash
# Two measurements on a GPU machine that has JAX with CUDA but neither TensorFlow nor Keras, and
# no internet: Table 1's WRN-16-1 <- WRN-16-2 row trained on the full Fashion-MNIST, and the
# JAX throughput benchmark, both on JAX with every step XLA-compiled (JAX's default). Where the
# package registry is reachable, build the wheels first (they carry Fashion-MNIST's four .gz
# files along), copy the repository with .gpu-wheels/ to the GPU machine, and run the script
# from its root:
#
#     bash benchmarks/gpu_wheels.sh            # once, online: .gpu-wheels/ (56 MB)
#     bash benchmarks/gpu.sh [--out DIR] [--only table1|throughput] [--runs RUNS]
#
# It prints nvidia-smi and jax.devices(), installs the wheels into .gpu-site/ (pip --target
# --no-deps: no virtual environment, the machine's jax, numpy and ml_dtypes untouched), then:
#
# 1. Table 1 (benchmarks/table1_gpu.py): a WRN-16-2 teacher, the WRN-16-1 student alone and
#    with AT, then KD and AT+KD while the time allows, one seed, each an examples/cifar.py run
#    (reproduce.py's flags) bounded by `timeout`; a run out of time is reported as such. The
#    table (test error per method beside the paper's Table 1 CIFAR-10 numbers), the phases and
#    the estimate go to DIR/table1_gpu.md; the runs to RUNS (default runs/table1-gpu-<time>).
#    Epochs: 4 a run (7 with --only table1), the most that 330 s (420 s) hold at an estimated
#    40 s a run for starting, reading the data and compiling, plus 6 s an epoch. The estimate,
#    from measurements on a 2-core CPU (the numpy pipeline: 1.4 ms a batch of 128 Fashion-MNIST
#    images; Keras's fit loop with it: 2.8 ms a step; the AT step's compilation: 11 s) and the
#    AT step's 0.3 GFLOP an image at 10-20 TFLOP/s on an H100 (2-4 ms a step of 128), is 1-2 s
#    for the 469 steps of an epoch, about 3 s with the test pass and the backup: planned at
#    twice that (benchmarks/table1_gpu.py, ESTIMATE, says it in full; table1_gpu.md gives the
#    times measured).
# 2. `throughput.py --backend jax` with what is left (at batch 128; at 128 and 256 with
#    --only throughput, about 60 s of timing each), the tables to DIR/throughput_gpu.md.
#
# The whole script, installation and compilation included, ends within 8 minutes: every run is
# bounded by `timeout`. DIR defaults to docs/.
#
# KERAS_AT_GPU_TINY=1 runs tiny settings instead (256 images, 1 epoch, batch 32; one
# throughput batch of 8 16x16 images, 2 rounds), to test the script end to end on a CPU with a
# CPU jax. PYTHON picks the interpreter (default python3); WHEELS the wheels folder (default
# .gpu-wheels); GPU_SITE where they are installed (default .gpu-site).
set -uo pipefail
cd "$(dirname "$0")/.."
START=$SECONDS
PY=${PYTHON:-python3}
WHEELS=${WHEELS:-.gpu-wheels}
SITE=${GPU_SITE:-$PWD/.gpu-site}
DEST=docs
ONLY=
RUNS=()
USAGE="usage: bash benchmarks/gpu.sh [--out DIR] [--only table1|throughput] [--runs RUNS]"
while [ $# -gt 0 ]; do
    case "$1" in
        --out) DEST=${2:?--out needs a folder}; shift 2 ;;
        --out=*) DEST=${1#--out=}; shift ;;
        --only) ONLY=${2:?--only needs table1 or throughput}; shift 2 ;;
        --only=*) ONLY=${1#--only=}; shift ;;
        --runs) RUNS=(--runs "${2:?--runs needs a folder}"); shift 2 ;;
        --runs=*) RUNS=(--runs "${1#--runs=}"); shift ;;
        *) echo "$USAGE" >&2; exit 2 ;;
    esac
done
case "$ONLY" in
    "") PARTS=(table1 throughput) ;;
    table1|throughput) PARTS=("$ONLY") ;;
    *) echo "--only $ONLY: expected table1 or throughput. $USAGE" >&2; exit 2 ;;
esac
# BUDGET: seconds for everything after the installation; TABLE1: the Table 1 phases' share.
if [ "${KERAS_AT_GPU_TINY:-0}" = 1 ]; then
    BATCHES=(8); SIZE=16; ROUNDS=2; STEPS=1; LIMIT=5; BUDGET=560; TABLE1=400
    TABLE1_FLAGS=(--limit 256 --test-limit 256 --batch-size 32 --epochs 1 --phase-seconds 30
                  --epoch-seconds 10)
else
    # About 60 s of timing per batch; the rest of each run's share is import and compilation.
    BATCHES=(128 256); SIZE=32; ROUNDS=30; STEPS=5; LIMIT=60; BUDGET=450; TABLE1=330
    TABLE1_FLAGS=()
fi
if [ "${#PARTS[@]}" = 2 ]; then
    BATCHES=("${BATCHES[0]}")  # the throughput gets what Table 1 leaves
elif [ "$ONLY" = table1 ]; then
    TABLE1=$((BUDGET - 30))
fi
# The Table 1 driver's own start and report, beyond its phases' budget.
DRIVER=30

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
if [[ " ${PARTS[*]} " = *" table1 "* ]] \
        && [ ! -f "$WHEELS/fashion-mnist/train-images-idx3-ubyte.gz" ]; then
    echo "No $WHEELS/fashion-mnist/ (Fashion-MNIST's four .gz files): benchmarks/gpu_wheels.sh"
    echo "copies them there; run it again, or run only the benchmark with --only throughput."
    exit 1
fi
rm -rf "$SITE"
"$PY" -m pip install --quiet --disable-pip-version-check --no-index --no-deps \
    --find-links "$WHEELS" --target "$SITE" keras absl-py h5py namex optree packaging rich \
    markdown-it-py mdurl pygments typing-extensions || exit 1
# The carried packages come before the image's own copies; keras_at from this checkout.
export PYTHONPATH="$SITE:$PWD"
export KERAS_BACKEND=jax
export KERAS_AT_OFFLINE=1  # no downloads: the data comes from $WHEELS
"$PY" -c "import keras, keras_at; print('keras', keras.__version__, 'on', keras.backend.backend())" \
    || exit 1

mkdir -p "$DEST"
STATUS=0
# Everything after the installation counts against BUDGET.
START=$SECONDS

if [[ " ${PARTS[*]} " = *" table1 "* ]]; then
    echo "== Table 1: benchmarks/table1_gpu.py (phases ${TABLE1} s, at most $((TABLE1 + DRIVER)) s)"
    timeout $((TABLE1 + DRIVER)) "$PY" benchmarks/table1_gpu.py --budget "$TABLE1" \
        --data-dir "$WHEELS" --out "$DEST/table1_gpu.md" "${RUNS[@]}" "${TABLE1_FLAGS[@]}"
    CODE=$?
    if [ "$CODE" -ne 0 ]; then
        echo "Table 1: table1_gpu.py ended with status $CODE (1: a required run did not" \
             "finish, see $DEST/table1_gpu.md; 124: out of its $((TABLE1 + DRIVER)) s)"
        STATUS=1
    fi
fi

[[ " ${PARTS[*]} " = *" throughput "* ]] || exit "$STATUS"
TABLES=$(mktemp -d)
for i in "${!BATCHES[@]}"; do
    B=${BATCHES[$i]}
    # This run's share of what is left of the budget: the remaining runs share the rest.
    LEFT=$((BUDGET - (SECONDS - START)))
    SHARE=$((LEFT / (${#BATCHES[@]} - i)))
    if [ "$SHARE" -lt 30 ]; then
        echo "batch $B: not run, ${LEFT} s left of the budget"
        STATUS=1
        continue
    fi
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
    echo "== no throughput table to write after $((SECONDS - START)) s"
    STATUS=1
fi
rm -rf "$TABLES"
exit "$STATUS"
