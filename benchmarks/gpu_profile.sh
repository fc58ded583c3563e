#!/usr/bin/env bash
# The `gpu` profile on a bare, offline GPU machine (the lent H100): the training-step benchmark, then
# seed 0 of the methods named, two at a time on the one GPU. Wheels in .whl/ (faiss-cpu) and the four
# Fashion-MNIST .gz files in data/fashion-mnist/ travel with the tree; everything comes back as ONE
# tarball (the device returns at most 8 files). Usage, with the commit being shipped:
#   MIXLAB_COMMIT=$(git rev-parse --short HEAD) bash benchmarks/gpu_profile.sh OUTDIR [EPOCHS] [METHODS...]
# then, here: python benchmarks/collect_runs.py --out results/gpu/train --commit ... NAME=runs/gpu/<method> ...
set -uo pipefail
out=${1:?usage: gpu_profile.sh OUTDIR [EPOCHS] [METHODS...]}
epochs=${2:-}
methods=("${@:3}")
[ ${#methods[@]} -eq 0 ] && methods=(mice moco)
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONPATH=${PYTHONPATH:-$PWD} MIXLAB_OFFLINE=1 PYTHONUNBUFFERED=1 MIXLAB_COMMIT=${MIXLAB_COMMIT:-unknown}
mkdir -p "$out" runs/gpu
nvidia-smi -L
timeout 170 python3 benchmarks/throughput.py --backbones small-cnn resnet18 --steps 20 --workers 8 \
  --out runs/gpu/throughput-cuda.md > runs/gpu/throughput.log 2>&1
for ((i = 0; i < ${#methods[@]}; i += 2)); do  # two runs share the GPU: ~17 and ~11 s/epoch for MiCE/MoCo
  for m in "${methods[@]:i:2}"; do
    timeout 540 python3 -m mixlab train --method "$m" --profile gpu --seed 0 --out "runs/gpu/$m" \
      --set progress=false ${epochs:+--set epochs=$epochs} > "runs/gpu/$m.log" 2>&1 &
  done
  wait
done
tar czf "$out/gpu_runs.tgz" --exclude=checkpoint.pt runs/gpu
