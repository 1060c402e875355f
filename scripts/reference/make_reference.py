#!/usr/bin/env python3
"""Reference vectors for the Rust tests, computed with PyTorch + transformers.

Writes into assets/reference/:
  smollm2.json         top-10 next-token logits and 12-token greedy continuations of
                       SmolLM2-135M-Instruct along several chains, for several prompts
  tokenizer_ids.json   token ids of tricky strings
  tiny-*/              tiny random models (config.json + safetensors) of the other supported
                       architectures, with full logits and greedy ids along several chains

SmolLM2 is loaded by transformers' own GGUF reader straight from the GGUF file (its own
dequantization, q/k un-permutation and tokenizer conversion), so the Rust import path is checked
against an independent implementation, not against itself.

Chains run with the *unrolled* semantics: the model's layer list is replaced by
[L[c0], L[c1], ...] and every forward recomputes all positions (no KV cache), so a repeated
layer is just another layer.

Usage (from the repository root, after `cargo xtask assets`):
  python3 -m venv /tmp/refvenv && /tmp/refvenv/bin/pip install -r scripts/reference/requirements.txt
  /tmp/refvenv/bin/python scripts/reference/make_reference.py
"""
import argparse
import contextlib
import json
import os

import torch
from transformers import (AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM,
                          Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_chain(spec):
    out = []
    for item in spec.split(","):
        if "-" in item:
            a, b = item.split("-")
            out.extend(range(int(a), int(b) + 1))
        else:
            out.append(int(item))
    return out


@contextlib.contextmanager
def with_chain(model, chain):
    """Temporarily makes `model`'s decoder run layers[c] for c in chain, then restores it."""
    layers, n, types = model.model.layers, model.config.num_hidden_layers, getattr(model.config, "layer_types", None)
    model.model.layers = torch.nn.ModuleList([layers[i] for i in chain])
    model.config.num_hidden_layers = len(chain)
    if types is not None:
        model.config.layer_types = [types[i] for i in chain]
    try:
        yield model
    finally:
        model.model.layers, model.config.num_hidden_layers = layers, n
        if types is not None:
            model.config.layer_types = types


@torch.no_grad()
def logits_of(model, ids):
    return model(torch.tensor([ids]), use_cache=False).logits[0].float()


@torch.no_grad()
def greedy_uncached(model, ids, n):
    ids = list(ids)
    new = []
    for _ in range(n):
        nxt = int(torch.argmax(logits_of(model, ids)[-1]))
        new.append(nxt)
        ids.append(nxt)
    return new


def smollm2(cache, out_dir):
    gguf_dir = os.path.join(cache, "gguf")
    gguf_file = "SmolLM2-135M-Instruct.Q4_1.gguf"
    tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file, dtype=torch.float32)
    model.eval()

    chains = ["0-29", "0-3,8-25,28,29", "0-9,9,10-29", "0-14,12-29", "0-9,11,10,12-29", "0-4,25-29"]
    prompts = [
        {"text": "The capital of France is", "chat": False},
        {"text": "Question: Which gas do plants absorb from the air?\nA. oxygen\nB. carbon dioxide\n"
                 "C. helium\nD. neon\nAnswer:", "chat": False},
        {"text": "What is 12 + 30? Put the final answer in \\boxed{}.", "chat": True},
    ]
    records = []
    for p in prompts:
        if p["chat"]:
            ids = tok.apply_chat_template([{"role": "user", "content": p["text"]}],
                                          add_generation_prompt=True, tokenize=True)
            if isinstance(ids, dict) or hasattr(ids, "input_ids"):
                ids = ids["input_ids"]
        else:
            ids = tok(p["text"])["input_ids"]
        ids = [int(i) for i in ids]
        rec = {"text": p["text"], "chat": p["chat"], "ids": ids, "chains": []}
        for spec in chains:
            with with_chain(model, parse_chain(spec)) as m:
                last = logits_of(m, ids)[-1]
                top_v, top_i = torch.topk(last, 10)
                rec["chains"].append({
                    "chain": spec,
                    "top": [[int(i), float(v)] for i, v in zip(top_i, top_v)],
                    "greedy": greedy_uncached(m, ids, 12),
                })
        records.append(rec)
        print("smollm2:", repr(p["text"][:40]), "done")
    with open(os.path.join(out_dir, "smollm2.json"), "w") as f:
        json.dump({"model": "SmolLM2-135M-Instruct.Q4_1.gguf via transformers GGUF loader",
                   "torch": torch.__version__, "prompts": records}, f, indent=1)

    strings = ["Hello world", "a 1 22 333 4444", " 2024-11-29", "x=12.5% of $1,000",
               "  two spaces,   three\n\n\tnewlines and tab", "naïve café 日本語 🤖",
               "<|im_start|>user\nHi there<|im_end|>\n", "don't won't I'll", "\\frac{1}{2} + \\sqrt{3}",
               "", "   ", "ünïcödé\u00a0nbsp"]
    with open(os.path.join(out_dir, "tokenizer_ids.json"), "w") as f:
        json.dump([{"text": s, "ids": [int(i) for i in tok(s)["input_ids"]]} for s in strings], f, indent=1)


def tiny_models(out_dir):
    common = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  rms_norm_eps=1e-5, tie_word_embeddings=False)
    specs = [
        ("tiny-llama3", LlamaForCausalLM, LlamaConfig(
            **common, rope_theta=500000.0,
            rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                          "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
         dict(max_shard_size="100KB"), torch.float32),
        ("tiny-qwen2", Qwen2ForCausalLM, Qwen2Config(**{**common, "tie_word_embeddings": True},
                                                      rope_theta=10000.0), {}, torch.bfloat16),
        ("tiny-qwen3", Qwen3ForCausalLM, Qwen3Config(**common, head_dim=32, rope_theta=1000000.0),
         {}, torch.float16),
    ]
    chains = ["0-2", "0,2", "0,1,1,2", "2,1,0,0", "1"]
    ids = [5, 17, 99, 3, 64, 127, 0, 42, 8]
    for name, cls, cfg, save_kw, dtype in specs:
        torch.manual_seed(1234)
        model = cls(cfg).eval()
        # Make biases and norm weights non-trivial so they are actually tested.
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n.endswith("bias") or "norm" in n:
                    p.add_(torch.randn_like(p) * 0.2)
        # Round-trip through the on-disk dtype, then compute in f32 from exactly those values.
        model = model.to(dtype).to(torch.float32)
        d = os.path.join(out_dir, name)
        os.makedirs(d, exist_ok=True)
        model.to(dtype).save_pretrained(d, safe_serialization=True, **save_kw)
        model = model.to(torch.float32)
        recs = []
        for spec in chains:
            with with_chain(model, parse_chain(spec)) as m:
                recs.append({"chain": spec, "logits": logits_of(m, ids).flatten().tolist(),
                             "greedy": greedy_uncached(m, ids, 8)})
        with open(os.path.join(d, "reference.json"), "w") as f:
            json.dump({"ids": ids, "dtype": str(dtype), "chains": recs}, f)
        print(name, "done")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", default=os.environ.get("COLA_CACHE", os.path.join(ROOT, "assets", "cache")))
    ap.add_argument("--out", default=os.path.join(ROOT, "assets", "reference"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    os.makedirs(args.out, exist_ok=True)
    tiny_models(args.out)
    smollm2(args.cache, args.out)


if __name__ == "__main__":
    main()
