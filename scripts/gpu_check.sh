#!/usr/bin/env bash
# GPU check (issue 15, part 5): run on a machine with CUDA, e.g. the device machine. Not part of CI.
#   bash scripts/gpu_check.sh            # CUDA (fails in one line when there is none)
#   DEVICE=cpu bash scripts/gpu_check.sh # the same steps on the CPU (to check the script itself)
# Steps, each printing throughput and a loss that must be finite: train-proxy for 1 epoch (AMP on CUDA),
# `mixnas train` for 1 epoch (AMP and channels_last on CUDA), and a 4-trial search with `gpu: 1` per trial.
# Budget: under 5 minutes on a GPU machine. On the device machine (no registry, no Ray, no Optuna):
#   PY=python3 PYTHONPATH=. bash scripts/gpu_check.sh
# a step that needs a package that machine lacks is skipped in one line.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-$(mktemp -d)}
GPU_PER_TRIAL=1
[ "$DEVICE" = cpu ] && GPU_PER_TRIAL=0

"$PY" - "$DEVICE" <<'EOF'
import sys
import torch
device = sys.argv[1]
print(f"torch {torch.__version__}, cuda available: {torch.cuda.is_available()}", flush=True)
if device == "cuda":
    if not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device here (install a CUDA torch build into .venv, or DEVICE=cpu)")
    print(f"device: {torch.cuda.get_device_name(0)}", flush=True)
EOF

echo "== train-proxy: mixnet_s at 64 px on synthetic data, 1 epoch, $DEVICE"
"$PY" -m mixnas.launch.cli train-proxy --arch mixnet_s --data synthetic --resolution 64 --images-per-class 64 \
  --epochs 1 --batch-size 128 --device "$DEVICE" --json > "$OUT/proxy.json"
"$PY" - "$OUT/proxy.json" <<'EOF'
import json, math, sys
r = json.load(open(sys.argv[1]))
print("  " + json.dumps({k: r.get(k) for k in ("status", "device", "images_per_second", "train_loss", "top1")}))
assert r.get("status") == "ok" and r.get("train_loss") is not None and math.isfinite(r["train_loss"]), r
EOF

echo "== train: mixnet_tiny on digits, 1 epoch, $DEVICE"
"$PY" -m mixnas.launch.cli train mixnet_tiny --data digits --epochs 1 --batch-size 64 --device "$DEVICE" \
  --output "$OUT/train" --no-tensorboard > /dev/null
"$PY" - "$OUT/train/metrics.json" <<'EOF'
import json, math, sys
r = json.load(open(sys.argv[1]))
last = (r.get("history") or [r])[-1]
print("  " + json.dumps({k: last.get(k) for k in ("epoch", "train_loss", "images_per_second", "top1")})
      + f" device {r.get('device')}")
assert last.get("train_loss") is not None and math.isfinite(last["train_loss"]), r
EOF

if ! "$PY" -c "import ray" 2>/dev/null; then
  echo "== search: skipped (ray is not installed for $PY; the device machine has none): all other steps passed"
  exit 0
fi
echo "== search: 4 trials of the quickstart, $GPU_PER_TRIAL GPU per trial"
"$PY" -m mixnas.launch.cli search experiments/quickstart.yaml --output "$OUT/search" -q \
  --set execution.trials=4 --set execution.max_concurrent=1 \
  --set "execution.resources_per_trial={cpu: 1, gpu: $GPU_PER_TRIAL}" \
  --set "evaluator.training.device=$DEVICE" --set logging.tensorboard=false > /dev/null
"$PY" -m mixnas.launch.cli status "$OUT/search" --json > "$OUT/status.json"
"$PY" - "$OUT/status.json" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"  done {s['done']}, counts {s['counts']}")
assert s["counts"]["ok"] == 4, s
EOF
echo "gpu_check: all steps passed (outputs in $OUT)"
