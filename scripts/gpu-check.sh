#!/usr/bin/env bash
# The GPU check, run on a machine with an NVIDIA GPU and no package registries, in one go:
#   1. parity of CUDA and wgpu against the CPU on a small random model along several chains;
#   2. prefill (128, 512 tokens) and decode speed of a Llama-3.2-1B-shaped random model on CUDA,
#      next to PyTorch (eager, f32) on the same saved weights, in the same run.
# Build the binary beforehand where the registries are, and carry it:
#   CUDARC_CUDA_VERSION=13000 cargo build --release -p xtask --features cuda,wgpu
#   mkdir -p .gpu && cp target/release/xtask .gpu/
# Results go to $OUT (or ./gpu-check-out).
set -u
BIN=${BIN:-.gpu/xtask}
OUT=${OUT:-gpu-check-out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
"$BIN" parity --backend cuda 2>&1 | tee "$OUT/parity-cuda.txt"
"$BIN" parity --backend wgpu 2>&1 | tee "$OUT/parity-wgpu.txt"
"$BIN" random-model --shape llama-3.2-1b --out /tmp/llama-1b 2>&1 | tail -1
"$BIN" bench --backend cuda --model /tmp/llama-1b --search-samples 0 --reps 5 --json 2>&1 | tee "$OUT/bench-cuda.txt"
python3 scripts/bench/torch_bench.py --model /tmp/llama-1b --device cuda --reps 5 2>&1 | tee "$OUT/bench-torch-cuda.txt"
