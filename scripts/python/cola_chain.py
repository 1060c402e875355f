#!/usr/bin/env python3
"""Run a Hugging Face causal LM along a chain of layers (CoLa), as this project does.

A chain is a list of decoder-layer indices, e.g. [0, 1, 2, 2, 3] or its text form "0-2,2,3"
(comma-separated indices and inclusive ranges). The forward pass runs embed -> L[c0] -> L[c1] ->
... -> norm -> LM head. Each *step* of the chain has its own K/V cache slot, so a repeated layer
attends to the keys and values of its own earlier occurrences at that step, exactly as if the
chain were a deeper model with shared weights. (Patching `model.model.layers` alone is not
enough for cached generation: both occurrences of a repeated layer would write to the same
cache slot, `self_attn.layer_idx`, and the second would attend to the first's entries.)

Plain torch + transformers; nothing from this project is needed. Use it from Python:

    from cola_chain import along_chain, parse_chain, greedy
    with along_chain(model, parse_chain("0-9,9,10-29")):
        logits = model(input_ids).logits          # a forward pass along the chain
        new_ids = greedy(model, ids, 20)           # cached greedy decoding along the chain

or from the command line (prints the continuation, or with --json the ids and logits):

    python3 scripts/python/cola_chain.py --model DIR_OR_FILE.gguf --chain 0-9,9,10-29 \\
        --prompt "Question: ..." --max-new-tokens 20
    python3 scripts/python/cola_chain.py --model DIR --chains RUN/chains.json --task arc-easy \\
        --doc-id Mercury_7220990 --prompt "..."

`--chains` reads what `cargo xtask export-chains RUN_DIR` writes (docs/chains.md): the item's
shortest correct chain found by MCTS, or with `--task` alone the task's most often right chain.
The prompt must be built the way the search built it (same scoring and template) for the
chain to mean what it meant there.
"""
import argparse
import contextlib
import copy
import json
import os
import sys

import torch


def parse_chain(text):
    """`0-2,2,5` -> [0, 1, 2, 2, 5]."""
    out = []
    for item in text.split(","):
        item = item.strip()
        try:
            if "-" in item:
                a, b = item.split("-")
                out.extend(range(int(a), int(b) + 1))
            else:
                out.append(int(item))
        except ValueError:
            raise ValueError(f"chain `{text}`: item `{item}` is not an index or a range a-b") from None
    if not out:
        raise ValueError("empty chain")
    return out


def _step(layer, index):
    """A shallow copy of decoder `layer` that writes to K/V cache slot `index`. Parameters and
    submodules other than the attention module stay shared with the original."""
    step = copy.copy(layer)
    step._modules = dict(layer._modules)  # its own child table; the children are shared
    attn = copy.copy(layer.self_attn)
    attn.layer_idx = index
    step._modules["self_attn"] = attn
    if hasattr(step, "layer_idx"):
        step.layer_idx = index
    return step


@contextlib.contextmanager
def along_chain(model, chain):
    """Makes `model` (a *ForCausalLM of the Llama/Qwen2/Qwen3 kind) run the decoder layers of
    `chain` in order, one K/V slot per step, until the block ends."""
    inner = model.model
    layers, config = inner.layers, model.config
    n = config.num_hidden_layers
    bad = [c for c in chain if not 0 <= c < len(layers)]
    if bad:
        raise ValueError(f"chain uses layers {bad}, but the model has {len(layers)} (0-{len(layers) - 1})")
    types = getattr(config, "layer_types", None)
    inner.layers = torch.nn.ModuleList([_step(layers[c], i) for i, c in enumerate(chain)])
    config.num_hidden_layers = len(chain)  # the cache gets one slot per step
    if types is not None:
        config.layer_types = [types[c] for c in chain]
    try:
        yield model
    finally:
        inner.layers, config.num_hidden_layers = layers, n
        if types is not None:
            config.layer_types = types


@torch.no_grad()
def greedy(model, ids, max_new_tokens, stop_ids=()):
    """Greedy decoding with the K/V cache: the first new token from the prompt's last logits,
    then one cached step per token, until a stop id (kept) or `max_new_tokens`."""
    out = model(torch.tensor([list(ids)]), use_cache=True)
    past, new = out.past_key_values, []
    while len(new) < max_new_tokens:
        nxt = int(torch.argmax(out.logits[0, -1]))
        new.append(nxt)
        if nxt in stop_ids or len(new) == max_new_tokens:
            break
        out = model(torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
        past = out.past_key_values
    return new


def load(path):
    """A model directory or a .gguf file (transformers' own GGUF reader dequantizes it), in f32."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"dtype": torch.float32}
    if path.endswith(".gguf"):
        kwargs["gguf_file"] = os.path.basename(path)
        path = os.path.dirname(os.path.abspath(path))
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs).eval()
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **({"gguf_file": kwargs["gguf_file"]} if "gguf_file" in kwargs else {}))
    except Exception:  # a checkpoint without tokenizer files: --ids still works
        tokenizer = None
    return model, tokenizer


def chain_from_export(path, task, doc_id):
    """The chain `cargo xtask export-chains` recorded for (task, doc_id), or the task's most
    often right chain when `doc_id` is None."""
    with open(path) as f:
        export = json.load(f)
    if not export.get("format", "").startswith("cola-chains/"):
        raise ValueError(f"{path}: not a chains export (no `format: cola-chains/...`)")
    if doc_id is not None:
        for item in export["items"]:
            if item["doc_id"] == doc_id and (task is None or item["task"] == task):
                if item["mcts"] is None:
                    raise ValueError(f"{path}: item {doc_id}: the search found no correct chain")
                return item["mcts"]["layers"]
        raise ValueError(f"{path}: no item {doc_id}" + (f" in task {task}" if task else ""))
    for t in export["tasks"]:
        if t["task"] == task:
            if not t["chains"]:
                raise ValueError(f"{path}: task {task}: no chain was right on any item")
            return t["chains"][0]["layers"]
    raise ValueError(f"{path}: no task {task} (tasks: {', '.join(t['task'] for t in export['tasks'])})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="HF model directory or .gguf file")
    which = ap.add_mutually_exclusive_group(required=True)
    which.add_argument("--chain", help="chain text, e.g. 0-9,9,10-29")
    which.add_argument("--chains", help="chains.json written by `cargo xtask export-chains`")
    ap.add_argument("--task", help="with --chains: the task (alone: its most often right chain)")
    ap.add_argument("--doc-id", help="with --chains: the item whose chain to use")
    text = ap.add_mutually_exclusive_group(required=True)
    text.add_argument("--prompt", help="prompt text (tokenized by the model's tokenizer)")
    text.add_argument("--ids", help="prompt token ids, comma-separated")
    ap.add_argument("--chat", action="store_true", help="wrap --prompt in the chat template")
    ap.add_argument("--max-new-tokens", type=int, default=20, help="greedy tokens to generate (default 20)")
    ap.add_argument("--ignore-eos", action="store_true", help="generate --max-new-tokens even past end-of-text")
    ap.add_argument("--json", action="store_true",
                    help="print {chain, ids, logits (every prompt position, flattened), greedy}")
    args = ap.parse_args()

    try:
        if args.chain:
            chain = parse_chain(args.chain)
        else:
            if args.task is None and args.doc_id is None:
                ap.error("--chains needs --doc-id and/or --task")
            chain = chain_from_export(args.chains, args.task, args.doc_id)
    except ValueError as e:
        sys.exit(f"error: {e}")
    if not os.path.exists(args.model):
        sys.exit(f"error: --model {args.model}: no such directory or file")
    model, tokenizer = load(args.model)
    if args.ids:
        try:
            ids = [int(x) for x in args.ids.split(",")]
        except ValueError:
            sys.exit(f"error: --ids `{args.ids}`: not comma-separated token ids")
    else:
        if tokenizer is None:
            sys.exit(f"error: {args.model} has no tokenizer; pass --ids")
        if args.chat:
            ids = tokenizer.apply_chat_template([{"role": "user", "content": args.prompt}], add_generation_prompt=True)
            ids = list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
        else:
            ids = tokenizer(args.prompt)["input_ids"]
    eos = model.generation_config.eos_token_id
    stop = [] if args.ignore_eos or eos is None else (eos if isinstance(eos, list) else [eos])
    try:
        with along_chain(model, chain), torch.no_grad():
            logits = model(torch.tensor([ids]), use_cache=False).logits[0].float()
            new = greedy(model, ids, args.max_new_tokens, stop)
    except ValueError as e:
        sys.exit(f"error: {e}")
    if args.json:
        print(json.dumps({"chain": chain, "ids": ids, "logits": logits.flatten().tolist(), "greedy": new}))
    else:
        print(tokenizer.decode(new) if tokenizer is not None else new)


if __name__ == "__main__":
    main()
