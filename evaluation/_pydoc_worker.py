"""Render standard-library pydoc pages; run as a script in a fresh, isolated interpreter.

``pydoc_text`` runs this file with ``python -S -P`` and no other ``PYTHON*`` variables (stdlib only on
``sys.path``: no site-packages, no ``.pth`` hooks) and ``PYTHONHASHSEED=0`` (set reprs render in a fixed
order), so importing ~400 modules can neither disturb the caller's process nor pick up third-party shims such
as setuptools' ``distutils``.

Reads a JSON list of module names from stdin (``[]`` = every public stdlib module and submodule) and writes
a JSON list of ``{"name", "text", "summary", "docstrings"}`` to the file named by its one argument, one entry
per page that imported and rendered. ``docstrings`` are the cleaned docstrings of the page's functions and
methods (inherited ones included). Imports only the standard library.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import json
import pkgutil
import pydoc
import re
import sys
import warnings
from types import ModuleType

SKIP_PARTS = frozenset(
    {
        "antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "test", "tests",
        "lib2to3", "site", "pydoc_data", "encodings", "ensurepip",
    }
)  # fmt: skip
DROPPED_SECTIONS = ("DATA", "FILE")  # environment- and machine-specific values (os.environ, paths)
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _wanted(name: str) -> bool:
    return not any(part.startswith("_") or part in SKIP_PARTS for part in name.split("."))


def _import(name: str) -> ModuleType | None:
    """Import quietly; ``None`` on any failure (platform-specific and optional modules fail here)."""
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            return importlib.import_module(name)
    except Exception:  # arbitrary import-time failures of arbitrary modules: skip the page
        return None


def all_module_names() -> list[str]:
    """Public importable stdlib modules and their public submodules, sorted."""
    names: list[str] = []
    for top in sorted(sys.stdlib_module_names):
        if not _wanted(top) or (module := _import(top)) is None:
            continue
        names.append(top)
        path = getattr(module, "__path__", None)
        if path is None:
            continue
        for info in pkgutil.walk_packages(path, f"{top}.", onerror=lambda _name: None):
            if _wanted(info.name) and _import(info.name) is not None:
                names.append(info.name)
    return sorted(set(names))


def _drop_sections(text: str) -> str:
    """Remove pydoc's top-level sections named in ``DROPPED_SECTIONS`` (title line + indented body)."""
    out: list[str] = []
    dropping = False
    for line in text.split("\n"):
        if line and not line[0].isspace():
            dropping = line.strip() in DROPPED_SECTIONS
        if not dropping:
            out.append(line)
    return "\n".join(out)


def _docstrings(module: ModuleType) -> list[str]:
    """Cleaned docstrings of the module's functions and of its classes' methods, deduplicated and sorted."""
    found: set[str] = set()
    for _, member in inspect.getmembers(module):
        routines = [member] if inspect.isroutine(member) else []
        if inspect.isclass(member):
            routines = [m for _, m in inspect.getmembers(member) if inspect.isroutine(m)]
        for routine in routines:
            doc = inspect.getdoc(routine)
            if doc:
                found.add(doc)
    return sorted(found)


def render(name: str) -> dict[str, object] | None:
    """One page as a JSON-ready dict, or ``None`` if the module fails to import or render."""
    module = _import(name)
    if module is None:
        return None
    try:
        text = pydoc.plain(pydoc.render_doc(module, renderer=pydoc.plaintext))
        docstrings = _docstrings(module)
    except Exception:  # pydoc can trip over exotic members; skip the page
        return None
    text = _ADDRESS.sub("", _drop_sections(text))
    doc = inspect.getdoc(module) or ""
    summary = next((line.strip() for line in doc.split("\n") if line.strip()), "")
    return {"name": name, "text": text, "summary": summary, "docstrings": docstrings}


def main() -> None:
    warnings.simplefilter("ignore")
    requested = json.load(sys.stdin)
    names = requested or all_module_names()
    with contextlib.redirect_stdout(io.StringIO()):
        pages = [page for name in names if (page := render(name)) is not None]
    with open(sys.argv[1], "w", encoding="utf-8") as fh:
        json.dump(pages, fh)


if __name__ == "__main__":
    main()
