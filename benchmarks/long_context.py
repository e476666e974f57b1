"""Length collapse and memory of long-context encoders (position interpolation, TempScale) on the default model.

Length collapse (TempScale paper, arXiv 2410.24200): as inputs grow, their embeddings crowd into a narrow cone,
so unrelated long documents look alike. Measured here as the mean pairwise cosine of ``--docs`` documents per
length, cut from different places of the language-reference prose that ships with Python (``pydoc_data``), for
each encoder: the model as trained (which reads only its first 256 tokens), the position table interpolated to
the longest length (``keep``: the trained rows kept; ``linear``), and TempScale temperatures on top.
Lower is better spread; the trained model's 256-token row is the reference.

Memory: the peak resident memory of a fresh process that loads the model extended to ``--memory`` tokens and
encodes one input of that length, against the same process after loading only (SDPA never holds a full
attention matrix per head; the figure says what it does hold).

SelfExtend memory (``--self-extend N``): no rotary embedding model ships here, so a randomly initialised
ModernBERT (6 layers, hidden 256, 4 heads, trained length 1,024, global attention every third layer) is extended
to N tokens by SelfExtend and encodes one input of N tokens in a fresh process; its peak resident memory is
compared with loading alone and with the size a materialised attention matrix would have.

Usage: python benchmarks/long_context.py [--lengths 256,1024,4096,16384] [--docs 8] [--taus 1,0.9,0.8]
       [--memory 32768] [--self-extend 32768] [--output FILE.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

import numpy as np

_MEMORY_CHILD = """
import json, resource, sys
from longvec.embedder import EmbedderConfig, load_embedder
from longvec.index import token_counter
n = int(sys.argv[1])
def mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the process's high-water mark
e = load_embedder(EmbedderConfig(extend_to=n))
loaded = mib()
counter = token_counter(e)
text = sys.stdin.read()[: 8 * n]
text = text[: counter.token_offsets(text)[n - counter.n_special - 1][1]]  # n tokens with the special ones
before = mib()
e.encode_documents([text])
print(json.dumps({"tokens": counter.count(text), "loaded_mib": loaded, "before_mib": before, "peak_mib": mib()}))
"""


_SELF_EXTEND_CHILD = """
import json, resource, sys, time
import torch
from transformers import ModernBertConfig, ModernBertModel
from longvec.embedder.longctx import self_extend
n = int(sys.argv[1])
def mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
torch.manual_seed(0)
config = ModernBertConfig(
    vocab_size=1000, hidden_size=256, intermediate_size=512, num_hidden_layers=6, num_attention_heads=4,
    max_position_embeddings=1024, global_attn_every_n_layers=3, pad_token_id=0,
)
model = ModernBertModel(config).eval()
settings = self_extend(model, n)
loaded = mib()
ids = torch.randint(3, 1000, (1, n))
start = time.perf_counter()
with torch.inference_mode():
    out = model(input_ids=ids).last_hidden_state
row = {"tokens": n, **settings, "loaded_mib": loaded, "peak_mib": mib()}
row["finite"] = bool(torch.isfinite(out).all())
row["seconds"] = round(time.perf_counter() - start, 1)
row["full_matrix_mib_per_layer"] = n * n * 4 * config.num_attention_heads / 2**20  # fp32 logits, every head
print(json.dumps(row))
"""


def prose_slices(lengths: list[int], docs: int) -> dict[int, list[str]]:
    """``docs`` texts of each length (in model tokens, specials included), cut from spread-out places of the
    prose (the prose is read as a ring, as the synthetic tasks do)."""
    from pydoc_data.topics import topics

    from longvec.embedder import load_embedder
    from longvec.index import token_counter

    counter = token_counter(load_embedder())
    text = "\n\n".join(topics[k] for k in sorted(topics))
    offsets = counter.token_offsets(text)
    n = len(offsets)
    out: dict[int, list[str]] = {}
    for length in lengths:
        content = length - counter.n_special
        texts = []
        for i in range(docs):
            first = (i * n) // docs
            last = first + content - 1
            if last < n:
                texts.append(text[offsets[first][0] : offsets[last][1]])
            else:  # wrap around the ring
                texts.append(text[offsets[first][0] :] + "\n\n" + text[: offsets[last - n][1]])
        out[length] = texts
    return out


def mean_pairwise_cosine(vectors: np.ndarray) -> float:
    sims = vectors @ vectors.T
    n = len(vectors)
    return float((sims.sum() - np.trace(sims)) / (n * (n - 1)))


def collapse(lengths: list[int], docs: int, taus: list[float]) -> list[dict[str, Any]]:
    from longvec.embedder import EmbedderConfig, load_embedder

    texts = prose_slices(lengths, docs)
    longest = max(max(lengths), load_embedder().position_limit)  # a table is only ever grown
    configs: list[tuple[str, EmbedderConfig]] = [("trained (first 256 tokens)", EmbedderConfig())]
    for positions, tau in itertools.product(("keep", "linear"), taus):
        name = f"PI {positions} {longest}" + (f" + TempScale {tau:g}" if tau != 1 else "")
        configs.append((name, EmbedderConfig(extend_to=longest, positions=positions, temperature=tau)))
    rows = []
    for name, config in configs:
        embedder = load_embedder(config)
        row: dict[str, Any] = {"encoder": name}
        for length in lengths:
            start = time.perf_counter()
            vectors = embedder.encode_documents(texts[length])
            row[str(length)] = round(mean_pairwise_cosine(vectors), 4)
            row[f"seconds_{length}"] = round(time.perf_counter() - start, 1)
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def memory(tokens: int) -> dict[str, Any]:
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[k] for k in sorted(topics))
    while len(text) < tokens * 8:
        text += "\n\n" + text
    child = subprocess.run(
        [sys.executable, "-c", _MEMORY_CHILD, str(tokens)], input=text, capture_output=True, text=True, check=True
    )
    return json.loads(child.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", default="256,1024,4096,16384", help="document lengths in tokens")
    parser.add_argument("--docs", type=int, default=8, help="documents per length (default 8)")
    parser.add_argument("--taus", default="1,0.9,0.8", help="TempScale temperatures (1 = none)")
    parser.add_argument("--memory", type=int, default=32768, help="input length of the memory check (0: skip)")
    parser.add_argument("--self-extend", type=int, default=0, help="input length of the SelfExtend check (0: skip)")
    parser.add_argument("--output", help="also write the JSON here")
    args = parser.parse_args(argv)
    lengths = sorted(int(x) for x in args.lengths.split(",") if x)
    taus = [float(x) for x in args.taus.split(",")]
    result: dict[str, Any] = {
        "benchmark": "long_context",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "command": " ".join(["python", "benchmarks/long_context.py", *(argv or sys.argv[1:])]),
        "collapse": collapse(lengths, args.docs, taus) if lengths else [],
    }
    if args.self_extend:
        child = subprocess.run(
            [sys.executable, "-c", _SELF_EXTEND_CHILD, str(args.self_extend)],
            capture_output=True,
            text=True,
            check=True,
        )
        result["self_extend"] = json.loads(child.stdout.strip().splitlines()[-1])
        print(json.dumps(result["self_extend"]), flush=True)
    if args.memory:
        result["memory"] = memory(args.memory)
        print(json.dumps(result["memory"]), flush=True)
    if lengths:
        _print_collapse(result["collapse"], lengths)
    if args.output:
        with open(args.output, "w") as f:
            json.dump(result, f, indent=1)
    return 0


def _print_collapse(rows: list[dict[str, Any]], lengths: list[int]) -> None:
    print("\n| encoder | " + " | ".join(f"{n:,} tokens" for n in lengths) + " |")
    print("|---|" + "---|" * len(lengths))
    for row in rows:
        print(f"| {row['encoder']} | " + " | ".join(f"{row[str(n)]:.3f}" for n in lengths) + " |")


if __name__ == "__main__":
    sys.exit(main())
