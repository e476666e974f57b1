"""Code-search datasets in Go, TypeScript and C++: doc-comment cleanup and extraction on hand-written sources.

Nothing here needs the real sources of ``make eval-sources``: every test writes a tiny source tree to
``tmp_path`` and points the builder at it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from longvec.chunking.budget import TokenCounter
from longvec.evaluation import load_dataset
from longvec.evaluation.code_langs import LANGS, build_code_lang, code_lang_candidates, source_root
from longvec.evaluation.doc_comments import doxygen, go_doc, tsdoc
from longvec.evaluation.sentences import first_sentence
from longvec.index import InvalidInputError

GO = """package demo

import "strings"

// Join concatenates the elements of parts with sep between them.
//
// It is like strings.Join.
//
//go:noinline
func Join(parts []string, sep string) string {
	return strings.Join(parts, sep)
}

// Push adds v on top of the [Stack].
func (s *Stack) Push(v int) {
	s.items = append(s.items, v)
}

// asmStub has no body: it is implemented in assembly.
func asmStub(x int) int

func undocumented() {}

// Detached comment, separated from the function by a blank line.

func detached() {}

// Walk visits every node of the tree in depth-first order.
func Walk(t *Tree, f func(*Tree)) {
	// visit is a closure: not a candidate of its own.
	visit := func(n *Tree) { f(n) }
	visit(t)
}
"""

TS = """import { Observable } from './Observable';

export function map<T>(fn: (v: T) => T): Observable<T>;
/** @deprecated Use the other signature. */
export function map<T>(fn: (v: T) => T, thisArg: any): Observable<T>;
/**
 * Applies a given `project` function to each value, like {@link Array#map}.
 *
 * <span class="informal">Like [Array.map](https://example.com/map).</span>
 *
 * @param fn The projection.
 */
export function map<T>(fn: (v: T) => T, thisArg?: any): Observable<T> {
  return new Observable<T>();
}

export class Subject<T> extends Observable<T> {
  /**
   * Emits a value to every subscribed {@link Observer | observer} of this subject.
   */
  @bound
  next(value: T): void {
    const helpers = {
      /** Runs the helper, but as an object literal method it is not a candidate. */
      run() {},
    };
  }

  /** Completes the subject and every one of its observers. @returns nothing */
  complete(): void {}

  /** Declared only: not a candidate. */
  error(err: any): void;
}
"""

CPP = """namespace geo {

/** \\brief Computes the squared Euclidean norm of \\c v.
  *
  * \\sa norm()
  */
template <typename T>
T squaredNorm(const Vec<T>& v) {
  return dot(v, v);
}

/// \\returns the dot product of \\a a and \\a b.
/// \\note Both must have the same size.
inline double dot(const Vec<double>& a, const Vec<double>& b) { return a.x * b.x; }

class Matrix {
 public:
  /** Resizes the matrix to \\f$ r \\times c \\f$ entries. */
  void resize(int r, int c) { rows_ = r; cols_ = c; }

  /** Declared only: not a candidate. */
  int rows() const;

  //! Fills every entry with \\p value, keeping the size.
  void fill(double value) { data_.assign(value); }

  /** Fills every entry with zero, keeping the size. */
  /* (a plain comment between the doc and the code is ignored) */
  void fill() { fill(0.0); }
};

}  // namespace geo
"""


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return tmp_path


def _by_id(name: str, root: Path) -> dict[str, tuple[str, str]]:
    return {c.doc_id: (c.source, c.query) for c in code_lang_candidates(name, root=root)}


# ------------------------------------------------------------------------------------------ doc cleanup


def test_go_doc_drops_directives_and_unwraps_doc_links() -> None:
    comments = ["// Read reads from [io.Reader] into p[i:].", "//", "//go:nosplit", "//line x.go:1"]
    assert go_doc(comments).splitlines() == ["Read reads from io.Reader into p[i:]."]


def test_tsdoc_resolves_inline_tags_and_stops_at_block_tags() -> None:
    comment = "/**\n * Emits {@link Foo}, {@link Bar | a bar} and {@linkcode baz}.\n * @param x an `x`\n */"
    assert tsdoc([comment]) == "Emits Foo, a bar and baz."
    assert tsdoc(["/** @deprecated Use another. */"]) == ""
    assert tsdoc(["// a line comment"]) == ""
    assert tsdoc(["/** Mails me@example.com then stops. @see x */"]) == "Mails me@example.com then stops."
    assert tsdoc(['/** <span class="informal">Like **[map](https://x)**.</span> ![](m.png) */']) == "Like map."


def test_doxygen_brief_returns_and_inline_commands() -> None:
    assert doxygen(["/** \\class Foo\n  * \\brief Short \\c summary.\n  *\n  * Details. */"]) == "Short summary."
    assert (
        first_sentence(doxygen(["/// \\returns the \\em norm of \\f$ \\sqrt{x} \\f$.", "/// \\sa x"]))
        == "Returns the norm of sqrt{x}."
    )
    assert doxygen(["/** \\internal @brief Helper for \\a n items.\n  * \\param n count */"]) == "Helper for n items."
    assert doxygen(["// a plain comment"]) == ""


# ------------------------------------------------------------------------------------------- extraction


def test_go_candidates(tmp_path: Path) -> None:
    found = _by_id("code-go", _tree(tmp_path, {"demo/demo.go": GO, "demo/demo_test.go": GO, "testdata/x.go": GO}))
    assert sorted(found) == ["demo/demo.go::Join", "demo/demo.go::Stack.Push", "demo/demo.go::Walk"]
    source, query = found["demo/demo.go::Join"]
    assert query == "Join concatenates the elements of parts with sep between them."
    assert source.startswith("func Join(") and source.endswith("}") and "//" not in source
    assert found["demo/demo.go::Stack.Push"][1] == "Push adds v on top of the Stack."
    assert "// visit is a closure" in found["demo/demo.go::Walk"][0]


def test_go_generated_files_are_skipped(tmp_path: Path) -> None:
    generated = "// Code generated by mkall.go. DO NOT EDIT.\n\n" + GO
    assert _by_id("code-go", _tree(tmp_path, {"gen/zerrors.go": generated})) == {}


def test_typescript_candidates(tmp_path: Path) -> None:
    found = _by_id("code-ts", _tree(tmp_path, {"internal/map.ts": TS, "internal/map.d.ts": TS}))
    assert sorted(found) == [
        "internal/map.ts::Subject.complete",
        "internal/map.ts::Subject.next",
        "internal/map.ts::map",
    ]
    source, query = found["internal/map.ts::map"]
    assert query == "Applies a given project function to each value, like Array#map."
    assert source.startswith("export function map<T>(fn: (v: T) => T, thisArg?: any)") and "/**" not in source
    source, query = found["internal/map.ts::Subject.next"]
    assert query == "Emits a value to every subscribed observer of this subject."
    assert source.startswith("@bound\nnext(value: T): void {\n  const helpers")  # dedented, decorator kept
    assert found["internal/map.ts::Subject.complete"][1] == "Completes the subject and every one of its observers."


def test_cpp_candidates(tmp_path: Path) -> None:
    found = _by_id("code-cpp", _tree(tmp_path, {"geo/Matrix.h": CPP}))
    assert sorted(found) == [
        "geo/Matrix.h::geo.Matrix.fill",
        "geo/Matrix.h::geo.Matrix.fill#2",
        "geo/Matrix.h::geo.Matrix.resize",
        "geo/Matrix.h::geo.dot",
        "geo/Matrix.h::geo.squaredNorm",
    ]
    source, query = found["geo/Matrix.h::geo.squaredNorm"]
    assert query == "Computes the squared Euclidean norm of v."
    assert source.startswith("template <typename T>\nT squaredNorm(") and "brief" not in source
    assert found["geo/Matrix.h::geo.dot"][1] == "Returns the dot product of a and b."
    assert found["geo/Matrix.h::geo.Matrix.resize"][1] == "Resizes the matrix to r times c entries."
    assert found["geo/Matrix.h::geo.Matrix.fill#2"] == (
        "void fill() { fill(0.0); }",
        "Fills every entry with zero, keeping the size.",
    )


# ------------------------------------------------------------------------------------------------ pools


def _go_library(n: int) -> str:
    """``n`` distinct documented functions, one of them long, two sharing a doc, one quoted by another."""
    funcs = [
        f"// Step{i} advances counter number {i} of the machine.\nfunc Step{i}(m *M) {{\n\tm.c[{i}]++\n}}\n"
        for i in range(n)
    ]
    body = "".join(f"\tm.total += m.c[{i}] * {i} // accumulate register {i}\n" for i in range(120))
    funcs.append(f"// Sum adds up every counter of the machine.\nfunc Sum(m *M) {{\n{body}}}\n")
    funcs.append("// Reset clears every counter of the machine.\nfunc Reset(m *M) {\n\tm.c = nil\n}\n")
    funcs.append(
        "// Clear wipes the machine.\nfunc Clear(m *M) {\n\t// Reset clears every counter of the machine.\n}\n"
    )
    return "package m\n\n" + "\n".join(funcs)


def test_build_buckets_and_drops_ambiguous_or_quoted_queries(tmp_path: Path, counter: TokenCounter) -> None:
    shared = "package m\n\n// Open opens the named machine for reading.\nfunc Open(name string) *M {\n\treturn nil\n}\n"
    root = _tree(tmp_path, {"m/m.go": _go_library(12), "m/open_unix.go": shared, "m/open_windows.go": shared})
    (ds,), info = build_code_lang("code-go", counter, root=root)
    assert info == {"candidates": 17, "candidates_with_unique_query": 15}  # the two Opens share their query
    assert ds.name == "code-go" and {d.language for d in ds.docs} == {"go"} and len(ds.docs) == 17
    texts = {d.doc_id: d.text for d in ds.docs}
    relevant = {q.text: next(iter(ds.qrels[q.qid])) for q in ds.queries}
    assert "Open opens the named machine for reading." not in relevant
    assert "Reset clears every counter of the machine." not in relevant  # quoted verbatim inside Clear
    assert relevant["Sum adds up every counter of the machine."] == "m/m.go::Sum"
    assert len(relevant) == 14 and all(q.startswith("code-go-q") for q in ds.qrels)
    buckets = {q.text.split()[0]: q.bucket for q in ds.queries}
    assert buckets["Sum"] == "long" and buckets["Step3"] == "short"
    assert counter.count_many([texts["m/m.go::Sum"]])[0] > 256
    assert build_code_lang("code-go", counter, root=root)[0] == [ds]


def test_load_dataset_from_env_root_is_deterministic_and_cached(
    tmp_path: Path, counter: TokenCounter, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _tree(tmp_path / "src", {"internal/operators/map.ts": TS})
    monkeypatch.setenv("LONGVEC_TS_SRC", str(root))
    first = load_dataset("code-ts", tmp_path / "cache", counter, small=True)
    (cache_file,) = (tmp_path / "cache").iterdir()
    assert '"source": {"root": ' in cache_file.read_text(encoding="utf-8").splitlines()[0]
    assert load_dataset("code-ts", tmp_path / "cache", counter, small=True) == first  # read back
    assert load_dataset("code-ts", tmp_path / "other", counter, small=True) == first  # rebuilt
    assert "Applies a given project function to each value, like Array#map." in {q.text for q in first[0].queries}


def test_missing_sources_name_the_make_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LONGVEC_GO_SRC", raising=False)
    lang = dataclasses.replace(LANGS["code-go"], default_roots=(str(tmp_path / "none"), str(tmp_path / "go-*/src")))
    with pytest.raises(InvalidInputError, match=r"code-go: sources not found .*run `make eval-sources`"):
        source_root(lang)
    monkeypatch.setenv("LONGVEC_CPP_SRC", str(tmp_path / "missing"))
    with pytest.raises(
        InvalidInputError, match=r"code-cpp: source directory .* does not exist; run `make eval-sources`"
    ):
        code_lang_candidates("code-cpp")


def test_default_root_found_by_marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LONGVEC_GO_SRC", raising=False)
    _tree(tmp_path, {"go-1.9/src/fmt/print.go": GO, "go-1.21/src/fmt/print.go": GO, "go-1.22/src/README": ""})
    lang = dataclasses.replace(LANGS["code-go"], default_roots=(str(tmp_path / "go-*/src"),))
    assert source_root(lang) == tmp_path / "go-1.21/src"  # newest (1.21 > 1.9) with the marker file
