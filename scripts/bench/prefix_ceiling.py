#!/usr/bin/env python3
"""Upper bound on what prefix sharing can save for the chains a search evaluated.

Reads the `samples.jsonl` of run directories and replays each sample's MCTS chains in the order
the search evaluated them, with an unbounded cache that keeps every prefix of every chain: a
chain costs the layer steps after its longest prefix seen before. Prints the layer steps without
and with sharing and their ratio, which is the most any exact prefix cache can speed up the
layer work of that search.

    python3 scripts/bench/prefix_ceiling.py runs/arc-30x2-paper-actions-200
"""
import json
import sys
from pathlib import Path


def expand(spec):
    """Chain spec `0-3,5,9-7` -> layer list (ranges may run downwards)."""
    layers = []
    for part in spec.split(","):
        if "-" in part:
            a, b = map(int, part.split("-"))
            step = 1 if a <= b else -1
            layers.extend(range(a, b + step, step))
        else:
            layers.append(int(part))
    return tuple(layers)


def main(run_dirs):
    total = computed = 0
    for run in run_dirs:
        samples = Path(run) / "samples.jsonl"
        if not samples.is_file():
            sys.exit(f"{samples}: not found (pass run directories made by `cargo xtask search`)")
        for line in samples.open():
            record = json.loads(line)
            seen = set()
            for entry in sorted(record["chains"], key=lambda c: c["simulation"]):
                chain = expand(entry["chain"])
                shared = 0
                while shared < len(chain) and chain[: shared + 1] in seen:
                    shared += 1
                seen.update(chain[:i] for i in range(1, len(chain) + 1))
                total += len(chain)
                computed += len(chain) - shared
    if computed == 0:
        sys.exit("no chains in the given runs")
    print(f"layer steps without sharing {total}, with an unbounded prefix cache {computed}: ceiling {total / computed:.2f}x")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
