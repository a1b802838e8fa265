#!/usr/bin/env bash
# The GPU measurements of the image path, bf16 training and the Pitts30k-size epoch in one call
# on a machine with one NVIDIA GPU, ending in one table. Run from the repository root:
#
#     bash benchmarks/device_check.sh          (about 7 minutes on an H200, and about 2 more
#                                              for the field's models; COMPILE=1 adds
#                                              torch.compile to the forward variants)
#
# Besides VGG16 + NetVLAD and AlexNet, two of the field's models at their authors' sizes, random
# weights: ResNet50 + MixVPR (320x320) and DINOv2-B + SALAD (322x322 evaluated, 224x224
# trained), each eval path against its bare forward, and training steps against bare steps
# (frozen layers as with pretrained weights: a ResNet's up to layer2, DINOv2's blocks but 4).
#
# The machine needs python3 with CUDA torch + torchvision, h5py and scipy. faiss is installed
# from a carried wheel when missing (put faiss_cpu-*.whl for that python under .whl/, e.g.
# `pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl faiss-cpu==1.15.1`).
# Results go to $OUT (default /tmp/device_check): results.jsonl, tests.log, run.log.
# DEVICE=cpu SCALE=small runs the same steps small on any machine (a dry run); MINE=1 adds
# `benchmarks mine` (CPU faiss vs CUDA vs the reference's per-query kNN, about a minute more).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/device_check}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! python3 -c "import faiss" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/faiss_cpu-*.whl || { echo "faiss: no wheel in .whl/"; exit 1; }
    export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
if [ "${SCALE:-full}" = small ]; then
    extract=(--images 96 --size 120x160) train=(--database 200 --queries 200 --val 60)
    epoch=(--database 300 --queries 200)
    field=(--images 48) field_train=(--database 60 --queries 40 --val 20) places=(--places 16)
    mixvpr_size=128x128 salad_size=126x126 salad_train_size=126x126  # SALAD: > 64 patches
else
    extract=(--images 2148 --size 480x640) train=() epoch=(--pitts30k-size)
    field=(--images 512) field_train=(--database 400 --queries 400 --val 100)
    places=(--places 480)  # 16 batches of P=30 x K=4 (a quarter of the authors' 120 places)
    mixvpr_size=320x320 salad_size=322x322 salad_train_size=224x224
fi
results="$OUT/results.jsonl"
: > "$results"
step() {  # step SECONDS VERB ARGS...: one benchmark; its JSON lines are kept if it fails
    local limit=$1; shift
    echo "== $(date +%T) benchmarks $*"
    timeout "$limit" python3 -m benchmarks "$@" 2>>"$OUT/run.log" | tee -a "$results"
    echo "   exit ${PIPESTATUS[0]}"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
python3 -c "import torch, torchvision as tv; print('torch', torch.__version__, 'torchvision', tv.__version__)"
echo "== $(date +%T) GPU tests"
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py >"$OUT/tests.log" 2>&1
tail -n 15 "$OUT/tests.log"
step 150 extract "${extract[@]}" --arch vgg16 --batch-size 32 --workers 8 --device "$DEVICE" \
    --repeats 2 --variants --other-paths ${COMPILE:+--compile}
[ -n "${MINE:-}" ] && step 120 mine --reference-queries 10
step 100 train "${train[@]}" --device "$DEVICE" --workers 8
# every layer trained (no frozen layers kept): the image path of training steps
step 100 train "${train[@]}" --device "$DEVICE" --workers 8 --weights none --skip-reference
# the field's models: eval path vs bare forward, then training steps vs bare steps
for model in "resnet50 mixvpr $mixvpr_size $mixvpr_size" \
             "dinov2_vitb14 salad $salad_size $salad_train_size"; do
    read -r arch aggregator size train_size <<<"$model"
    step 90 extract "${field[@]}" --size "$size" --arch "$arch" --aggregator "$aggregator" \
        --batch-size 32 --workers 8 --device "$DEVICE" --repeats 2
    step 120 train "${field_train[@]}" --size "$train_size" --arch "$arch" \
        --aggregator "$aggregator" --epochs 1 --device "$DEVICE" --workers 8 --skip-cli
done
# the field's recipe: ResNet50 + MixVPR place batches (multi-similarity loss and miner), steps
# against bare forward+backward steps of the same batches already on the GPU
step 120 train --loss multi-similarity "${places[@]}" --places-per-batch 30 --size "$mixvpr_size" \
    --arch resnet50 --aggregator mixvpr --epochs 1 --device "$DEVICE" --workers 8 \
    --skip-reference --skip-cli
step 330 epoch "${epoch[@]}" --device "$DEVICE" --workers 8 --progress
echo "== $(date +%T) done"
python3 -m benchmarks table "$results"
