"""Row (d) of the 2D Matryoshka grid: a model from `longvec train` on mined pairs, with no eval query among them.

    python benchmarks/train_2d.py --output DIR [--max-pairs 2000] [--max-steps N] [--batch-size 32]

Pairs are mined (``longvec.index.training.mined_pairs``, the same as ``longvec train`` mines) from

- the running interpreter's standard-library sources (``evaluation.code_search.stdlib_files``: docstring ->
  definition), the files the ``code`` dataset samples its functions from, and
- the ``pydoc`` dataset's pages (first sentence -> rest of paragraph), as ``longvec train --collection`` would
  mine a collection of them;

then every pair whose anchor overlaps a query of the ``code`` or ``pydoc`` pools (one contains the other,
whitespace and case folded) is dropped, so that the model never sees a query it is evaluated on (a ``code``
query is the first docstring sentence of a sampled function: it is exactly what mining finds for it). The rest is
sampled (``--max-pairs``), written as JSONL and trained on with ``longvec train --pairs`` (the product's command).
Then evaluate the model with ``benchmarks/matryoshka2d.py --model DIR --variants raw``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import sysconfig
import time
from collections import Counter
from pathlib import Path

from longvec.api.cli import main as longvec
from longvec.evaluation.code_search import stdlib_files
from longvec.index.training import mined_pairs
from longvec.index.types import Document

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared helpers beside this script
from _results import eval_pools  # noqa: E402


def _fold(text: str) -> str:
    return " ".join(text.lower().split())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--output", type=Path, required=True)
    ap.add_argument("--max-pairs", type=int, default=2000)
    ap.add_argument("--max-steps", type=int)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    pools = {pool.name: pool for pool in eval_pools("code,pydoc")}
    queries = [_fold(q.text) for pool in pools.values() for q in pool.queries]
    root = Path(sysconfig.get_paths()["stdlib"])
    sources = [Document(f.relative_to(root).as_posix(), f.read_text(errors="replace")) for f in stdlib_files(root)]
    pages = [Document(d.doc_id, d.text, path=d.path, language=d.language) for d in pools["pydoc"].docs]
    mined = mined_pairs(sources, seed=args.seed) + mined_pairs(pages, seed=args.seed)
    disjoint = [p for p in mined if not any(q in _fold(p.anchor) or _fold(p.anchor) in q for q in queries)]
    kept = random.Random(args.seed).sample(disjoint, min(args.max_pairs, len(disjoint)))
    print(
        f"mined {len(mined)} pairs, {len(mined) - len(disjoint)} dropped as overlapping one of {len(queries)} eval "
        f"queries; training on {len(kept)}: {dict(Counter(p.kind for p in kept))}",
        file=sys.stderr,
    )
    pairs_file = args.output.parent / f"{args.output.name}.pairs.jsonl"
    pairs_file.write_text("".join(json.dumps({"anchor": p.anchor, "positive": p.positive}) + "\n" for p in kept))
    command = ["train", "--pairs", str(pairs_file), "--output", str(args.output), "--batch-size", str(args.batch_size)]
    command += ["--seed", str(args.seed)] + (["--max-steps", str(args.max_steps)] if args.max_steps else [])
    print("longvec " + " ".join(command), file=sys.stderr)
    start = time.perf_counter()
    code = longvec(command)
    print(f"trained in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
