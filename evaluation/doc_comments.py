"""Doc comments of Go, TypeScript (TSDoc/JSDoc) and C/C++ (Doxygen) as plain prose for code-search queries.

Each cleaner takes the text of the comment nodes that sit directly above a definition (in source order, no
blank line between them) and returns the description as plain text, paragraphs separated by blank lines, or
``""`` when the block is not a doc comment of that language. Markup is reduced to its words: Go doc links
``[io.Reader]``, TSDoc ``{@link X | label}``, Markdown links, images and backticks, HTML tags, Doxygen inline
commands (``\\c x``, ``\\f$ ... \\f$``). Block tags (``@param``, ``\\sa``, ``\\note``, ...) end the description;
a leading Doxygen ``\\returns`` reads as "Returns", and a ``\\brief`` paragraph is the description.
"""

from __future__ import annotations

import re

_HTML_TAGS = "a|b|br|code|div|em|i|img|li|ol|p|pre|small|span|strong|sub|sup|table|td|th|tr|tt|u|ul"
_HTML = re.compile(rf"</?(?:{_HTML_TAGS})\b[^<>]*>", re.IGNORECASE)
_MD_IMAGE = re.compile(r"!\[[^\]]*\]\([^)]*\)")
_MD_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")
_MD_EMPHASIS = re.compile(r"`+|\*\*")

# Go: `//go:noinline`, `//line f.go:1`, `//export F` are compiler directives, not documentation.
_GO_DIRECTIVE = re.compile(r"^(?:[a-z0-9]+:[a-z0-9]|line |extern |export )")
_GO_DOC_LINK = re.compile(r"(?<![\w\]])\[(\*?[A-Za-z_][\w.]*)\](?![\w(:\[])")

_TS_INLINE_LINK = re.compile(r"\{@link(?:code|plain)?\s+([^}|\s]+)(?:\s*\|\s*|\s+)?([^}]*)\}")
_TS_INLINE_TAG = re.compile(r"\{@\w+\s*([^}]*)\}")
_TS_BLOCK_TAG = re.compile(r"(?<![{\w])@[a-zA-Z]+\b")  # `@param`, not `{@link}` or an e-mail address

_DOXY_BLOCK = re.compile(
    r"^\s*[\\@](?:sa|see|param|tparam|note|warning|code|pre|post|throws?|exception|return|returns|retval|"
    r"deprecated|example|details|remarks|bug|todo|since|author|attention|par|li|ingroup|class|struct|fn|"
    r"defgroup|addtogroup|file|namespace|copydoc|include|snippet|verbatim|cond|endcond|overload)\b"
)
_DOXY_STRUCTURAL = re.compile(r"^\s*[\\@](?:ingroup|class|struct|fn|addtogroup|namespace|file|overload)\b.*$")
_DOXY_BRIEF = re.compile(r"^\s*[\\@]brief\b\s*")
_DOXY_LEADING_RETURNS = re.compile(r"^\s*[\\@]returns?\b\s*")
_DOXY_INTERNAL = re.compile(r"[\\@]internal\b\s*")
_DOXY_MATH = re.compile(r"\\f([$\[])(.*?)\\f[$\]]", re.DOTALL)  # \f$ x \times y \f$ -> x times y
_DOXY_WORD = re.compile(r"[\\@](?:c|a|p|b|e|em|ref|link|endlink)\s+")
_DOXY_OTHER = re.compile(r"\\[A-Za-z_]\w*")


def _web_markup(text: str) -> str:
    """Drop HTML tags, Markdown images and emphasis; Markdown links keep their label."""
    text = _MD_IMAGE.sub("", _HTML.sub("", text))
    return _MD_EMPHASIS.sub("", _MD_LINK.sub(r"\1", text))


def _block_lines(comment: str) -> list[str]:
    """The lines of a ``/** ... */`` or ``/*! ... */`` comment without the delimiters and leading ``*``."""
    body = comment[3:-2] if comment.endswith("*/") else comment[3:]
    return [re.sub(r"^\s*\*+ ?", "", line) if line.lstrip().startswith("*") else line for line in body.splitlines()]


def go_doc(comments: list[str]) -> str:
    """A Go doc comment (``//`` lines, or a ``/* */`` block) as text, directives dropped, doc links unwrapped."""
    lines: list[str] = []
    for comment in comments:
        if comment.startswith("//"):
            body = comment[2:]
            if not _GO_DIRECTIVE.match(body):
                lines.append(body[1:] if body.startswith(" ") else body)
        else:
            lines.extend(comment[2:-2].splitlines())
    return _GO_DOC_LINK.sub(r"\1", "\n".join(lines)).strip()


def tsdoc(comments: list[str]) -> str:
    """The description of the last ``/** */`` comment (``//`` lines ignored): up to the first block tag."""
    docs = [c for c in comments if c.startswith("/**") and c != "/**/"]
    if not docs:
        return ""
    text = "\n".join(_block_lines(docs[-1]))
    tag = _TS_BLOCK_TAG.search(text)
    text = _TS_INLINE_LINK.sub(lambda m: m[2].strip() or m[1], text[: tag.start()] if tag else text)
    return _web_markup(_TS_INLINE_TAG.sub(r"\1", text)).strip()


def _doxygen_lines(comments: list[str]) -> list[str]:
    """The lines of a block's Doxygen comments (``///``, ``//!``, ``/** */``, ``/*! */``); plain ones ignored."""
    doc: list[str] = []
    for comment in comments:
        if comment.startswith(("///", "//!")) and not comment.startswith("////"):
            doc.append(comment[3:])
        elif comment.startswith(("/**", "/*!")) and comment != "/**/":
            doc.extend(_block_lines(comment))
    return doc


def _doxygen_description(lines: list[str]) -> list[str]:
    """The ``\\brief`` paragraph if there is one, else the first paragraph that is not only structure."""
    lines = [_DOXY_INTERNAL.sub("", line) for line in lines if not _DOXY_STRUCTURAL.match(line)]
    start = next((i for i, line in enumerate(lines) if _DOXY_BRIEF.match(line)), None)
    if start is not None:
        lines = [_DOXY_BRIEF.sub("", lines[start]), *lines[start + 1 :]]
    while lines and not lines[0].strip():
        lines.pop(0)
    if lines:
        lines[0] = _DOXY_LEADING_RETURNS.sub("Returns ", lines[0])
    end = next((i for i, line in enumerate(lines) if not line.strip() or _DOXY_BLOCK.match(line)), len(lines))
    return lines[:end]


def doxygen(comments: list[str]) -> str:
    """The description of a Doxygen comment, inline commands reduced to their words."""
    text = "\n".join(_doxygen_description(_doxygen_lines(comments)))
    text = _DOXY_MATH.sub(lambda m: m[2].replace("\\", "").strip(), text)
    text = _DOXY_OTHER.sub("", _DOXY_WORD.sub("", text))
    return _web_markup(text).strip()
