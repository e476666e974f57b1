"""Supported code languages: file extensions, lazily loaded tree-sitter grammars, definition node types.

Grammars come from the per-language wheels (``tree-sitter-python``, ...), which bundle their parsers; they
are imported only when a file of that language is first parsed. Extensions of other common languages map
to a name too, so such files are still known as code (and fall back to text chunking).
"""

from __future__ import annotations

import importlib
import re
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import PurePath
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tree_sitter import Language, Node, Parser


@dataclass(frozen=True)
class LanguageSpec:
    """One grammar-backed language.

    ``definitions`` are node types that open a named scope (function, class, struct, impl, ...): chunks
    inside them get the definition's dotted path as ``symbol``. ``wrappers`` wrap a single definition
    (decorators, ``export``, ``template<...>``, ``typedef``): a chunk that is exactly a wrapper takes the
    inner definition's name, but the wrapper itself adds no level to the path.
    """

    name: str
    extensions: tuple[str, ...]
    module: str
    loader: str
    definitions: frozenset[str]
    wrappers: frozenset[str] = frozenset()


_C_DEFS = {"function_definition", "struct_specifier", "union_specifier", "enum_specifier"}
_JS_DEFS = {
    "class_declaration",
    "class",
    "function_declaration",
    "function_expression",
    "generator_function_declaration",
    "method_definition",
    "variable_declarator",
    "field_definition",
}
_JS_WRAPPERS = {"export_statement", "lexical_declaration", "variable_declaration"}
_TS_DEFS = _JS_DEFS | {
    "abstract_class_declaration",
    "interface_declaration",
    "enum_declaration",
    "type_alias_declaration",
    "internal_module",
    "module",
    "method_signature",
    "abstract_method_signature",
    "function_signature",
    "public_field_definition",
}
_TS_WRAPPERS = _JS_WRAPPERS | {"ambient_declaration", "expression_statement"}


def _spec(
    name: str,
    extensions: tuple[str, ...],
    module: str,
    definitions: set[str],
    *,
    loader: str = "language",
    wrappers: set[str] | None = None,
) -> LanguageSpec:
    return LanguageSpec(name, extensions, module, loader, frozenset(definitions), frozenset(wrappers or ()))


CODE_LANGUAGES: dict[str, LanguageSpec] = {
    s.name: s
    for s in (
        _spec(
            "python",
            (".py", ".pyi"),
            "tree_sitter_python",
            {"function_definition", "class_definition"},
            wrappers={"decorated_definition"},
        ),
        _spec(
            "javascript",
            (".js", ".mjs", ".cjs", ".jsx"),
            "tree_sitter_javascript",
            _JS_DEFS,
            wrappers=_JS_WRAPPERS,
        ),
        _spec(
            "typescript",
            (".ts", ".mts", ".cts"),
            "tree_sitter_typescript",
            _TS_DEFS,
            loader="language_typescript",
            wrappers=_TS_WRAPPERS,
        ),
        _spec("tsx", (".tsx",), "tree_sitter_typescript", _TS_DEFS, loader="language_tsx", wrappers=_TS_WRAPPERS),
        _spec(
            "java",
            (".java",),
            "tree_sitter_java",
            {
                "class_declaration",
                "interface_declaration",
                "enum_declaration",
                "record_declaration",
                "annotation_type_declaration",
                "method_declaration",
                "constructor_declaration",
                "compact_constructor_declaration",
            },
        ),
        _spec(
            "go",
            (".go",),
            "tree_sitter_go",
            {"function_declaration", "method_declaration", "type_spec", "type_alias"},
            wrappers={"type_declaration"},
        ),
        _spec(
            "rust",
            (".rs",),
            "tree_sitter_rust",
            {
                "function_item",
                "function_signature_item",
                "struct_item",
                "enum_item",
                "union_item",
                "trait_item",
                "impl_item",
                "mod_item",
                "macro_definition",
            },
        ),
        _spec("c", (".c", ".h"), "tree_sitter_c", _C_DEFS, wrappers={"type_definition"}),
        _spec(
            "cpp",
            (".cc", ".cpp", ".cxx", ".c++", ".hpp", ".hh", ".hxx", ".h++", ".ipp", ".tpp"),
            "tree_sitter_cpp",
            _C_DEFS | {"class_specifier", "namespace_definition"},
            wrappers={"type_definition", "template_declaration"},
        ),
    )
}

OTHER_CODE_EXTENSIONS: dict[str, str] = {
    ".rb": "ruby",
    ".php": "php",
    ".kt": "kotlin",
    ".kts": "kotlin",
    ".swift": "swift",
    ".scala": "scala",
    ".sc": "scala",
    ".cs": "csharp",
    ".fs": "fsharp",
    ".vb": "vbnet",
    ".sh": "shell",
    ".bash": "shell",
    ".zsh": "shell",
    ".fish": "shell",
    ".ps1": "powershell",
    ".lua": "lua",
    ".pl": "perl",
    ".pm": "perl",
    ".r": "r",
    ".jl": "julia",
    ".m": "objective-c",
    ".mm": "objective-cpp",
    ".dart": "dart",
    ".ex": "elixir",
    ".exs": "elixir",
    ".erl": "erlang",
    ".hs": "haskell",
    ".clj": "clojure",
    ".ml": "ocaml",
    ".mli": "ocaml",
    ".groovy": "groovy",
    ".gradle": "groovy",
    ".zig": "zig",
    ".nim": "nim",
    ".f90": "fortran",
    ".sql": "sql",
    ".vue": "vue",
    ".svelte": "svelte",
    ".proto": "protobuf",
    ".cmake": "cmake",
}
_FILENAMES: dict[str, str] = {"makefile": "make", "dockerfile": "dockerfile", "cmakelists.txt": "cmake"}
_EXTENSIONS: dict[str, str] = {ext: s.name for s in CODE_LANGUAGES.values() for ext in s.extensions}
_ALIASES: dict[str, str] = {
    "py": "python",
    "python3": "python",
    "js": "javascript",
    "jsx": "javascript",
    "node": "javascript",
    "ts": "typescript",
    "golang": "go",
    "rs": "rust",
    "c++": "cpp",
    "cxx": "cpp",
    "cc": "cpp",
    "c#": "csharp",
    "cs": "csharp",
    "rb": "ruby",
    "sh": "shell",
    "bash": "shell",
    "kt": "kotlin",
}
KNOWN_CODE_LANGUAGES: frozenset[str] = frozenset(
    {*CODE_LANGUAGES, *OTHER_CODE_EXTENSIONS.values(), *_FILENAMES.values()}
)


def normalize_language(name: str) -> str:
    """Lower-case ``name`` and resolve common aliases (``py`` -> ``python``, ``c++`` -> ``cpp``)."""
    key = name.strip().lower()
    return _ALIASES.get(key, key)


def language_for_path(path: str) -> str | None:
    """The code language of a file from its extension (or a few well-known names); ``None`` if not code."""
    p = PurePath(path)
    suffix = p.suffix.lower()
    return _EXTENSIONS.get(suffix) or OTHER_CODE_EXTENSIONS.get(suffix) or _FILENAMES.get(p.name.lower())


@cache
def language_object(language: str) -> Language:
    """The tree-sitter ``Language`` of a grammar-backed language, importing its wheel on first use."""
    from tree_sitter import Language

    spec = CODE_LANGUAGES.get(language)
    if spec is None:
        raise KeyError(f"no tree-sitter grammar for language {language!r}; have {sorted(CODE_LANGUAGES)}")
    module = importlib.import_module(spec.module)
    return Language(getattr(module, spec.loader)())


_local = threading.local()


def parser_for(language: str) -> Parser:
    """A cached tree-sitter parser for ``language`` (one per thread: parsers are not thread-safe)."""
    parsers: dict[str, Parser] = _local.__dict__.setdefault("parsers", {})
    if language not in parsers:
        from tree_sitter import Parser

        parsers[language] = Parser(language_object(language))
    return parsers[language]


_NAME_LEAVES = {
    "identifier",
    "field_identifier",
    "type_identifier",
    "qualified_identifier",
    "destructor_name",
    "operator_name",
    "operator_cast",
    "template_function",
    "namespace_identifier",
}
_FUNCTION_VALUES = {
    "arrow_function",
    "function_expression",
    "function",
    "generator_function",
    "class",
}
_BOUND_VALUES = {"variable_declarator", "field_definition", "public_field_definition"}
_TEMPLATE_ARGS = re.compile(r"<[^<>]*>")
_SPECIFIERS = {"struct_specifier", "union_specifier", "enum_specifier", "class_specifier"}


def _text(node: Node) -> str:
    raw = (node.text or b"").decode("utf-8", errors="replace")
    while _TEMPLATE_ARGS.search(raw):
        raw = _TEMPLATE_ARGS.sub("", raw)
    return re.sub(r"\s+", "", raw).replace("::", ".")


def _type_name(node: Node | None) -> str | None:
    """The base name of a type expression: ``*Stack`` / ``Stack<T>`` / ``fmt::Stack`` -> ``Stack``."""
    while node is not None:
        if node.type in ("type_identifier", "identifier", "primitive_type"):
            return _text(node)
        inner = node.child_by_field_name("type") or node.child_by_field_name("name")
        if inner is None:
            named = node.named_children
            inner = next((c for c in named if "type" in c.type), named[0] if named else None)
        node = inner
    return None


def _declarator_name(node: Node | None) -> str | None:
    """Follow a C/C++ declarator chain (pointer, reference, function declarators) to the declared name."""
    while node is not None:
        if node.type in _NAME_LEAVES:
            return _text(node)
        inner = node.child_by_field_name("declarator")
        if inner is None:
            inner = next(
                (c for c in node.named_children if c.type in _NAME_LEAVES or c.type.endswith("declarator")),
                None,
            )
        node = inner
    return None


def _wrapped(node: Node, spec: LanguageSpec) -> Node | None:
    kinds = spec.definitions | spec.wrappers
    return next((c for c in node.named_children if c.type in kinds), None)


def definition_name(node: Node, spec: LanguageSpec) -> str | None:
    """The name a definition (or wrapped definition) contributes to a symbol path; ``None`` if anonymous.

    Go methods and Rust impls are qualified by their receiver/self type (``Stack.Push``, ``Stack``); C++
    out-of-class definitions read ``Stack::push`` as ``Stack.push``.
    """
    kind = node.type
    if kind in spec.wrappers:
        inner = _wrapped(node, spec)
        return definition_name(inner, spec) if inner is not None else None
    if kind not in spec.definitions:
        return None
    if kind in _SPECIFIERS and node.child_by_field_name("body") is None:
        return None  # `struct Stack *s`: a type reference, not a definition
    if kind == "impl_item":
        return _type_name(node.child_by_field_name("type"))
    if kind in _BOUND_VALUES:  # `const f = () => ...`, `handler = () => ...`: only function values count
        value = node.child_by_field_name("value")
        if value is None or value.type not in _FUNCTION_VALUES:
            return None
    name_node = node.child_by_field_name("name") or node.child_by_field_name("property")
    if name_node is not None:
        name = _text(name_node)
        receiver = node.child_by_field_name("receiver") if kind == "method_declaration" else None
        if receiver is not None and (owner := _type_name(receiver)):
            return f"{owner}.{name}"
        return name or None
    return _declarator_name(node.child_by_field_name("declarator"))


def wrapped_chain(node: Node, spec: LanguageSpec) -> frozenset[int]:
    """Ids of the nodes a wrapper wraps, down through nested wrappers to the definition (``export const``)."""
    ids: set[int] = set()
    inner = _wrapped(node, spec) if node.type in spec.wrappers else None
    while inner is not None:
        ids.add(inner.id)
        inner = _wrapped(inner, spec) if inner.type in spec.wrappers else None
    return frozenset(ids)
