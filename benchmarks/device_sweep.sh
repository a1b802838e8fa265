#!/usr/bin/env bash
# A 2-trial sweep on the device machine's GPU, Ray Tune + Optuna + MLflow and the mining service
# on CUDA, with the wheels that machine lacks carried in over consecutive device calls.
#
# Here (network to the package index): `python benchmarks/pack_wheels.py` writes .whl/part1,
# .whl/part2, ... (each at most 60 MiB: a call carries 64 MiB with the repository). Then one
# device call per part, each within the machine's warm time of the last (30 s: /tmp survives
# only while the same machine is held), all running this script and carrying one part:
#
#     run(command="bash benchmarks/device_sweep.sh", carry=[".whl/part1"])  # stages part 1
#     run(command="bash benchmarks/device_sweep.sh", carry=[".whl/part2"])  # the last part:
#                                               # joins, checks, installs, then the sweep
#
# (with today's wheels: part1 is the first 60 MiB of Ray's wheel, part2 the rest of it and the
# other 38 wheels, 54 MiB). Each call copies its part to /tmp/wheels; once every part of PARTS
# is there, chunks NAME.whl.NN are joined, SHA256SUMS checked, the wheels installed into
# /tmp/site (pip --no-index --no-deps --target) and the sweep runs: a synthetic dataset
# (`python -m orchestrator synth`, 60 places of 64x80), 2 trials of 2 epochs, AlexNet/VGG16,
# 0.45 GPU per trial, the mining service on 0.1 GPU with its torch index on CUDA (the parent run's
# tag miner_device says where it ran). A call after a fresh start (the machine went back)
# finds /tmp/wheels empty and says which parts are missing: carry them again.
# Results: $OUT (default /tmp/device_sweep): sweep.log, sweep.json and summary.json.
# SWEEP_ARGS adds flags to the sweep (e.g. "--arch resnet18 --aggregator gem").
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/device_sweep}
STAGE=${STAGE:-/tmp/wheels}
SITE=${SITE:-/tmp/site}
WORK=${WORK:-/tmp/sweep}
mkdir -p "$OUT" "$STAGE"
for part in .whl/part*/; do
    [ -f "$part/PARTS" ] || continue
    cp "$part"/* "$STAGE"/ && touch "$STAGE/.have-$(basename "$part")"
    echo "staged $(basename "$part"): $(ls "$part" | grep -c '\.whl') files"
done
[ -f "$STAGE/PARTS" ] || { echo "no part staged yet: carry .whl/part1"; exit 3; }
parts=$(cat "$STAGE/PARTS")
missing=$(for n in $(seq 1 "$parts"); do [ -f "$STAGE/.have-part$n" ] || echo -n "part$n "; done)
if [ -n "$missing" ]; then
    echo "waiting for: ${missing}(carry .whl/<part> in the next call, within 30 s)"
    exit 0
fi
if [ ! -f "$SITE/.installed" ]; then
    for first in "$STAGE"/*.whl.00; do  # join the chunks of a wheel over the part size
        [ -e "$first" ] || continue
        whole=${first%.00}
        cat "$whole".[0-9][0-9] > "$whole" && rm "$whole".[0-9][0-9]
    done
    (cd "$STAGE" && sha256sum --quiet -c SHA256SUMS) || { echo "a wheel is damaged"; exit 4; }
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" "$STAGE"/*.whl || { echo "installing the wheels failed"; exit 5; }
    touch "$SITE/.installed"
fi
export PYTHONPATH="$SITE:$PWD" PYTHONUNBUFFERED=1
python3 -c "import ray, optuna, mlflow, faiss, ray.tune, ray.tune.search.optuna; \
print('ray', ray.__version__, 'optuna', optuna.__version__, 'mlflow', mlflow.__version__, \
'faiss', faiss.__version__)" || { echo "the carried packages do not import"; exit 6; }
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA'; \
print(torch.cuda.get_device_name())" || exit 7
rm -rf "$WORK" && mkdir -p "$WORK"
python3 -m orchestrator synth --out "$WORK/data" --places 60 --image-size 64x80 --quiet
# shellcheck disable=SC2086  # SWEEP_ARGS: several flags
timeout 420 python3 -m orchestrator sweep --data-root "$WORK/data" --num-samples 2 \
    --epochs 2 --gpus-per-trial 0.45 --cpus-per-trial 4 --device cuda \
    --cache-dir "$WORK/cache" --storage "$WORK/ray_results" \
    --tracking-uri "sqlite:///$WORK/mlflow.db" --json "$OUT/sweep.json" ${SWEEP_ARGS:-} \
    2>&1 | tee "$OUT/sweep.log"
status=${PIPESTATUS[0]}
python3 - "$WORK/mlflow.db" "$OUT/summary.json" <<'EOF'
import json, sys
from mlflow import MlflowClient

client = MlflowClient(f"sqlite:///{sys.argv[1]}")
runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
summary = [{"name": r.info.run_name, "status": r.info.status, "kind": r.data.tags.get("kind"),
            "miner_device": r.data.tags.get("miner_device"), "device": r.data.params.get("device"),
            "precision": r.data.params.get("precision"),
            "metrics": {k: round(v, 4) for k, v in r.data.metrics.items()}} for r in runs]
json.dump(summary, open(sys.argv[2], "w"), indent=1)
for run in summary:
    print(json.dumps(run))
EOF
echo "sweep exit $status"
exit "$status"
