"""The search page in a real headless browser (Debian's chromium, driven by Playwright): type a query, see ranked
documents with the matching spans highlighted and the symbol path of code hits."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from longvec.api.app import create_app
from longvec.index import Collection, Document

from fakes import WordHashEmbedder
from servers import live

CODE = '''import socket


class Server:
    """Accepts connections."""

    def bind_socket(self, port):
        sock = socket.socket()
        sock.bind(("127.0.0.1", port))
        return sock

    def render_page(self, items):
        return "".join(str(i) for i in items)
'''


def _chromium() -> str:
    """Debian's chromium, installed here if it is missing and this machine can install packages."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "chromium"]):
        try:
            done = subprocess.run(sudo + command, capture_output=True, text=True, timeout=900, env=env)
        except (OSError, subprocess.TimeoutExpired) as exc:
            pytest.skip(f"no chromium, and it cannot be installed here: {exc}")
        if done.returncode != 0:
            pytest.skip(f"no chromium, and `{' '.join(command)}` failed: {done.stderr.strip()[-300:]}")
    found = shutil.which("chromium")
    if not found:
        pytest.skip("chromium was installed but is not on PATH")
    return found


def test_type_a_query_and_see_highlighted_spans(tmp_path, tokenizer) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (the dev extra) is not installed")
    chromium = _chromium()
    collection = Collection.create(tmp_path / "c", embedder=WordHashEmbedder(tokenizer, max_tokens=48))
    collection.add(
        [
            Document("src/server.py", CODE),
            Document("notes/cache.md", "The cache keeps rendered pages. " * 3 + "Nothing about networking here."),
            Document("notes/other.md", "Unrelated text about gardening and tomatoes."),
            Document("notes/x.html", 'socket <img src=x onerror="window.pwned=1"> <b>bold</b>'),
        ]
    )
    with live(create_app(collection)) as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 700})
            page.goto(url + "/")
            page.fill("#query", "bind socket port")
            page.press("#query", "Enter")
            page.wait_for_selector(".hit", timeout=15_000)
            hits = page.locator(".hit")
            assert hits.count() == 4
            # stored text is shown as text: the markup in a document never becomes elements
            assert page.locator("#results img").count() == 0 and page.locator("#results b").count() == 0
            assert page.evaluate("window.pwned === undefined")
            assert "<img src=x" in page.locator("#results").inner_text()
            assert hits.nth(0).locator(".doc").inner_text() == "src/server.py"
            assert page.locator("#status").inner_text().startswith("4 documents")
            first = hits.nth(0)
            assert first.locator(".symbol").first.inner_text() == "Server.bind_socket"
            highlighted = first.locator("mark").first.inner_text()
            assert "def bind_socket(self, port):" in highlighted and "sock.bind" in highlighted
            assert "render_page" not in highlighted  # the span, not the whole file
            assert first.locator(".doc").get_attribute("href") == "document?id=src%2Fserver.py"
            scores = [float(t.split()[1]) for t in page.locator(".score").all_inner_texts()]
            assert scores == sorted(scores, reverse=True)
            page.screenshot(path=str(tmp_path / "page.png"))
            # an error is shown, not swallowed
            page.fill("#query", "x" * 9000)
            page.press("#query", "Enter")
            deadline = time.monotonic() + 10
            while not page.locator("#status").inner_text().startswith("error:"):
                assert time.monotonic() < deadline
                time.sleep(0.05)
        finally:
            browser.close()
    assert (tmp_path / "page.png").stat().st_size > 10_000
