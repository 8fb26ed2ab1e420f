#!/usr/bin/env bash
# The CUDA checks of issues #16 (item 5) and #21 (item 4) in one short run on a machine with a GPU:
#   bash benchmarks/gpu/check.sh OUT DATA_DIR      # DATA_DIR holds mnist/ (the IDX files)
# 1. gpu_check.py: SynFlow and Panning screening and a 2-epoch compacted training of LeNet-5 and
#    VGG-19 at CIFAR shape;
# 2. a 2-cell grid (ray-lenet5-mnist.toml) on a local Ray cluster, one GPU per cell;
# 3. torchrun: one process on the GPU (NCCL), one epoch of LeNet-5/MNIST under DistributedDataParallel.
# DEVICE=cpu QUICK=1 CPUS=1 tries the script itself on a machine without a GPU (gloo, quick grid).
# Writes the log and the results into OUT; the run folders stay in a temporary directory.
# A GPU machine without a package registry: prepare-carry.sh packs Ray, the wheels and MNIST first.
set -euo pipefail
out=${1:?usage: check.sh OUT DATA_DIR}
data=${2:?usage: check.sh OUT DATA_DIR}
device=${DEVICE:-cuda}
quick=${QUICK:+--quick}
cpus=${CPUS:-4}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out/ray-grid"
if [ "$device" = cuda ]; then nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; fi
python3 -c 'import platform, torch, ray; print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda, "ray", ray.__version__)'

echo "== 1. screening and 2-epoch training at CIFAR shape"
python3 benchmarks/gpu/gpu_check.py --out "$out" --device "$device" ${QUICK:+--examples 512}

echo "== 2. a 2-cell grid on Ray, one GPU per cell"
began=$SECONDS
python3 -m panning bench benchmarks/gpu/ray-lenet5-mnist.toml $quick --executor ray --device "$device" \
    --cpus-per-cell "$cpus" --data-dir "$data" --cells "$work/cells" --out "$work/ray-grid"
echo "grid: $((SECONDS - began)) s"
cp "$work/ray-grid/results.csv" "$work/ray-grid/results.jsonl" "$out/ray-grid/"

echo "== 3. torchrun, one process, one epoch under DistributedDataParallel"
python3 -m torch.distributed.run --standalone --nproc-per-node 1 -m panning run --model lenet5 --dataset mnist \
    --method synflow --sparsity 0.99 --epochs 1 --seed 0 --device "$device" --data-dir "$data" --out "$work/ddp"
python3 - "$work/ddp" <<'PY'
import json, sys
from pathlib import Path
run = Path(sys.argv[1])
metrics = json.loads((run / "metrics.json").read_text())
config = json.loads((run / "config.json").read_text())
keep = ("test_accuracy", "val_accuracy", "effective_sparsity", "seconds_per_epoch", "dead")
print("ddp device:", config["train"]["device"], "distributed:", config.get("distributed"))
print("ddp metrics:", {k: metrics.get(k) for k in keep})
PY
