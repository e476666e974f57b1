"""A screenshot of the search page of a running `longvec serve`, after one query (the README's image):

    python scripts/page_screenshot.py http://127.0.0.1:8000 "parse command line options" docs/search-page.png

Needs Debian's chromium (`apt-get install chromium`) and Playwright (the dev extra)."""

from __future__ import annotations

import shutil
import sys

from playwright.sync_api import sync_playwright


def main() -> None:
    url, query, out = sys.argv[1:4]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.goto(url.rstrip("/") + "/")
        page.fill("#query", query)
        page.fill("#k", "5")
        page.press("#query", "Enter")
        page.wait_for_selector(".hit", timeout=60_000)
        page.screenshot(path=out, full_page=False)
        browser.close()


if __name__ == "__main__":
    main()
