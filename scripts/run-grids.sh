#!/usr/bin/env bash
# The real-budget grids of issues #17 and #19, in the order they are needed, one thread per cell,
# with their finished cells kept in the committed store benchmarks/results/cells. Resumable: run it
# again and it continues where it stopped; after each grid its table, report and plots are written.
# $PANNING_DATA is searched first and then the system folders (not --data-dir, which is the only
# place looked in), so MNIST may sit in $PANNING_DATA and Fashion-MNIST in /usr/share/datasets.
#   PANNING_DATA=/path/to/data scripts/run-grids.sh [grid ...]      (default: all, in this order)
set -euo pipefail
cd "$(dirname "$0")/.."
: "${PANNING_DATA:?set PANNING_DATA to the folder holding mnist/ (and fashion-mnist/, or install dataset-fashion-mnist)}"
export OMP_NUM_THREADS=1
grids=("$@")
if [ ${#grids[@]} -eq 0 ]; then
  grids=(lenet5-mnist lenet5-fashion-mnist lenet300-mnist
         strongest-lenet5-mnist strongest-lenet5-fashion-mnist strongest-lenet300-mnist)
fi
for grid in "${grids[@]}"; do
  .venv/bin/panning bench "benchmarks/$grid.toml" \
    --cells benchmarks/results/cells --out "benchmarks/results/$grid"
  .venv/bin/panning report "benchmarks/results/$grid/results.csv"
done
