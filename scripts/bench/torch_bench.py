#!/usr/bin/env python3
"""Times PyTorch (transformers, f32, eager) on an HF-layout model directory, with the same token ids
and thread count as `cargo xtask bench`, and prints one JSON line:
{"prefill_128_ms":..,"prefill_512_ms":..,"decode_tokens_per_s":..}.
Run by `cargo xtask bench --vs-torch`; usable by hand too."""
import argparse
import json
import statistics
import time

import torch
from transformers import AutoConfig, AutoModelForCausalLM

MASK = (1 << 64) - 1


def bench_ids(n, vocab):
    """Same xorshift sequence as xtask/src/bench_cmd.rs::bench_ids."""
    x = 0x9E3779B97F4A7C15
    out = []
    for _ in range(n):
        x ^= (x << 13) & MASK
        x ^= x >> 7
        x ^= (x << 17) & MASK
        out.append(100 + x % (vocab - 100))
    return out


def time_ms(reps, f):
    f()
    times = []
    for _ in range(max(reps, 1)):
        t = time.perf_counter()
        f()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", required=True)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--decode-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = AutoConfig.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval().to(args.device)
    ids = torch.tensor([bench_ids(512, cfg.vocab_size)], device=args.device)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    @torch.no_grad()
    def prefill(n):
        model(ids[:, :n], use_cache=False, logits_to_keep=1)
        sync()

    @torch.no_grad()
    def decode():
        out = model(ids[:, :128], use_cache=True, logits_to_keep=1)
        past = out.past_key_values
        nxt = out.logits[:, -1:].argmax(-1)
        sync()
        t = time.perf_counter()
        for _ in range(args.decode_tokens):
            out = model(nxt, past_key_values=past, use_cache=True)
            past = out.past_key_values
            nxt = out.logits[:, -1:].argmax(-1)
        sync()
        return time.perf_counter() - t

    res = {
        "prefill_128_ms": time_ms(args.reps, lambda: prefill(128)),
        "prefill_512_ms": time_ms(args.reps, lambda: prefill(512)),
    }
    decode()
    secs = statistics.median([decode() for _ in range(min(args.reps, 3))])
    res["decode_tokens_per_s"] = args.decode_tokens / secs
    res["torch"] = torch.__version__
    res["threads"] = torch.get_num_threads()
    print(json.dumps(res))


if __name__ == "__main__":
    main()
