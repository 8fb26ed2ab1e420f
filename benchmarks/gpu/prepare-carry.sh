#!/usr/bin/env bash
# Packs what check.sh needs on a bare GPU machine that cannot reach a package registry (Python 3.12,
# its own torch): Ray (a 79 MB wheel, packed without its Java jars, RLlib, Serve, Data, Tune, Train
# and dashboard front-end, about 28 MB), Ray's jsonschema dependencies, Gymnasium and
# Stable-Baselines3, and the MNIST IDX files, into CARRY (default .devcarry, kept out of git).
#   bash benchmarks/gpu/prepare-carry.sh MNIST_DIR [CARRY]
# There, from the repository root:
#   mkdir -p /tmp/site /tmp/whl && tar -xJf CARRY/ray-site.tar.xz -C /tmp/site \
#     && python3 -m pip install -q --no-index --no-deps --target /tmp/whl CARRY/*.whl \
#     && PYTHONPATH=$PWD/src:/tmp/site:/tmp/whl bash benchmarks/gpu/check.sh OUT CARRY/data
set -euo pipefail
mnist=${1:?usage: prepare-carry.sh MNIST_DIR [CARRY]}
carry=${2:-.devcarry}
python=${PYTHON_VERSION:-3.12}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
download() {
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version "$python" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 "$@"
}
mkdir -p "$carry/data/mnist" "$work/site"
download -d "$work/ray" ray jsonschema jsonschema-specifications referencing rpds-py attrs
download -d "$carry" gymnasium stable-baselines3 farama-notifications
for wheel in "$work"/ray/*.whl; do unzip -q -o "$wheel" -d "$work/site"; done
rm -rf "$work"/site/ray/{jars,rllib,serve,llm,data,tune,train} "$work/site/ray/dashboard/client/build"
tar -cJf "$carry/ray-site.tar.xz" -C "$work/site" .
cp "$mnist"/*-ubyte.gz "$carry/data/mnist/"
du -sh "$carry"
