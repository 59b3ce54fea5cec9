#!/usr/bin/env bash
# The ResNet-20 criteria comparison at a GPU budget, sized to a deadline, on a machine
# with an accelerator and no TensorFlow (run there by the device tool, Keras on JAX):
#
#   bash benchmarks/device_criteria.sh DATA WORK OUT SECONDS [EPOCHS FT]
#
# 1. benchmarks/_device_probe.py times an epoch of Keras (JAX) and of PyTorch (CUDA) and
#    a Keras compile; unless EPOCHS and FT are given, the base epochs E (even) are the
#    most that let phases 2-3 end in 80% of what is left, and FT = E / 2;
# 2. criteria.py --train-only: the two bases (plain, sparsity-trained) and the first
#    plans (bn_scale on the sparse base, l1 on the plain one), fine-tuned, kept in WORK;
# 3. torch_pruning_compare.py --device cuda: Torch-Pruning's BNScalePruner and
#    GroupNormPruner on the same bases, fine-tuned in PyTorch; its report goes to OUT;
# 4. criteria.py --train-only again: the remaining keras_slim plans, as time allows.
# Every step stops at the deadline and keeps what it finished (criteria.py resumes from
# WORK); WORK is packed into OUT/work.tar.gz. Then, where TensorFlow runs, the same
# criteria.py command without --train-only (and with WORK unpacked) measures the test
# set and TFLite latency and writes the report; torch_pruning_compare.py --merge-only
# puts keras_slim's rows beside Torch-Pruning's.
set -uo pipefail
data=$1 work=$2 out=$3 budget=$4
device=${TORCH_DEVICE:-cuda} scale=${SCALE:-cpu}  # a dry run on a CPU: TORCH_DEVICE=cpu SCALE=smoke
end=$((SECONDS + budget))
export KERAS_BACKEND=jax XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
# full float32 convolutions (TF32 would blur the port checks' 1e-3 and the exactness checks)
export JAX_DEFAULT_MATMUL_PRECISION=highest
mkdir -p "$work" "$out"
pack() { tar czf "$out/work.tar.gz" --exclude='*.tflite' -C "$work" . ; echo "packed $(du -sh "$out/work.tar.gz")"; }
trap pack EXIT
step() {  # run "$@" until the deadline; skip it if under a minute is left
  local left=$((end - SECONDS - 15))
  if [ "$left" -lt 60 ]; then echo "SKIP ($left s left): $*"; return 1; fi
  timeout "$left" "$@"; local rc=$?
  echo "STEP rc=$rc ($((end - SECONDS)) s left): $*"
}
if [ $# -ge 6 ]; then
  e=$5 ft=$6
else
  probe=$(timeout 240 python benchmarks/_device_probe.py --data "$data" --device "$device" --images "${PROBE_IMAGES:-45000}" | tee /dev/stderr | grep '^PROBE ' | cut -c7-)
  [ -n "$probe" ] || { echo "the probe failed"; exit 1; }
  read -r e ft < <(python - "$probe" $((end - SECONDS)) <<'PY'
import json, sys
p, left = json.loads(sys.argv[1]), float(sys.argv[2])
k, c, t = p["keras_epoch_s"], 1.5 * p["keras_compile_s"], p.get("torch_epoch_s", 0.0)
# phases 2-3: 2E + 2FT Keras epochs, 2FT torch epochs, 4 compiles, ~100 s of starts
e = int((0.8 * left - 4 * c - 100) / (3 * k + t)) // 2 * 2
e = max(2, min(60, e))
print(e, max(1, e // 2))
PY
)
fi
echo "BUDGET epochs=$e finetune=$ft ($((end - SECONDS)) s left)"
common=(--data "$data" --scale "$scale" --arch resnet --epochs "$e" --finetune-epochs "$ft" --targets 0.5 --work "$work")
step python benchmarks/criteria.py "${common[@]}" --no-ablation --train-only \
    --methods "bn_scale (sparsity-trained)" l1
step python benchmarks/torch_pruning_compare.py "${common[@]}" --device "$device" --threads 8 \
    --out "$out" --methods "TP BNScalePruner (sparsity-trained)" "TP GroupNormPruner (one-shot)"
step python benchmarks/criteria.py "${common[@]}" --no-ablation --train-only \
    --methods "bn_scale (sparsity-trained)" l1 "bn_scale, normalize=mean (sparsity-trained)" \
    "Torch-Pruning BNScalePruner's channels (sparsity-trained)" taylor \
    "bn_scale (sparsity-trained), fine-tuned again"
