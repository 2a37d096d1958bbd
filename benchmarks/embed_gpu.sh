#!/bin/sh
# Issue 13's GPU measurements in one command, on a CUDA machine (one H100/H200).
#
# Prepare here (a machine with the package registry and ../shared/data): what the GPU machine
# lacks goes into the git-ignored runs/gpu (about 33 MB: two poster shards, a few wheels):
#   mkdir -p runs/gpu/wheels && cp ../shared/data/movielens-small-posters/posters-00[01].tar runs/gpu/
#   .venv/bin/pip download --only-binary=:all: --no-deps --python-version 3.12 -d runs/gpu/wheels \
#       open_clip_torch==3.3.0 ftfy wcwidth braceexpand pytest pluggy iniconfig pygments packaging
# Run there, from the repository root (runs/gpu travels with the working tree):
#   sh benchmarks/embed_gpu.sh [runs/gpu]
# It installs the wheels (no index), runs the gpu-marked embedding tests, then the benchmark's
# two configurations with the targets, ViT-B-32 at 224 px, batch 256, 2 poster shards
# x 8 copies = 14,192 samples: CPU decode at fp32 (>= 3,000 samples/s) and device decode
# (nvjpeg) at bf16-mixed (>= 8,000). One JSON line per configuration; the lines go in the README.
set -eu
BUNDLE=${1:-runs/gpu}
PY=${PYTHON:-python3}
$PY -m pip install -q --no-index --find-links "$BUNDLE/wheels" open_clip_torch braceexpand pytest
export PYTHONPATH="$PWD"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
$PY -m pytest -q -m gpu -p no:cacheprovider tests/encoders/test_embed_paths.py
$PY benchmarks/embed_throughput.py --suite gpu --shards "$BUNDLE/posters-*.tar" --copies 8
