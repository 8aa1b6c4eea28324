#!/usr/bin/env bash
# GPU check (issue 11) for the accelerator machine, which has JAX with CUDA but no TensorFlow.
# Prepare here once, in the repo root (wheels travel with `carry`, 64 MiB in all):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl keras==3.15.1 keras-tuner==1.4.8 namex optree h5py ml-dtypes rich absl-py
#   (drop any wheel the machine already has; its package list is in the device library's KINDS.md)
# Then run it there: command "bash benchmarks/gpu.sh", carry [".whl"], timeout_s 540.
# It measures float32 / mixed_bfloat16 / mixed_float16 training images/s of resnet50,
# efficientnet_b0 and mobilenet_v3_large at 224 px, batch 256, and one short real run.
set -euo pipefail
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" KERAS_BACKEND=jax PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,compute_cap,memory.total --format=csv || true
timeout 500 python3 benchmarks/gpu_bench.py --out "${OUT:-/tmp/gpu_out}"
