#!/usr/bin/env bash
# Train every method on the `gpu` profile, concurrently on one GPU, and time the training step.
# For a bare GPU machine without network (the lent H100): wheels in .whl/ (faiss-cpu) and the four
# Fashion-MNIST .gz files in data/fashion-mnist/ travel with the tree. Usage:
#   bash benchmarks/gpu_profile.sh OUTDIR [EPOCHS]
set -uo pipefail
out=${1:?usage: gpu_profile.sh OUTDIR [EPOCHS]}
epochs=${2:-}
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONPATH=${PYTHONPATH:-$PWD} MIXLAB_OFFLINE=1 PYTHONUNBUFFERED=1
mkdir -p "$out" runs/gpu
nvidia-smi -L
python3 -c "import torch, faiss; print('torch', torch.__version__, 'faiss', faiss.__version__)"
timeout 120 python3 benchmarks/throughput.py --backbones small-cnn resnet18 --steps 20 --workers 8 \
  --out "$out/throughput-cuda.md" 2>&1 | tail -20
pids=()
for m in mice moco siammm nmm tcc; do
  extra=()
  [ -n "$epochs" ] && [ "$m" != nmm ] && extra=(--set "epochs=$epochs")
  timeout 420 python3 -m mixlab train --method "$m" --profile gpu --seed 0 --out "runs/gpu/$m" \
    --set progress=false "${extra[@]}" > "runs/gpu/$m.log" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
for m in mice moco siammm nmm tcc; do echo "== $m"; tail -3 "runs/gpu/$m.log"; done
tar czf "$out/gpu_runs.tgz" --exclude=checkpoint.pt --exclude='*.npz' runs/gpu
