"""The HTML report of the smoke report, opened in Chromium as a reader opens it: every image
loads, every section heading of the six notebooks is there, and no table is wider than the
page."""
from __future__ import annotations

import re

import nbformat
import pytest
from browser import VIEWPORT, Screenshots, chromium, needs_browser

from mura_core.experiments import profiles
from mura_core.report.workspace import NOTEBOOKS_DIR

pytestmark = [pytest.mark.slow, needs_browser()]


def notebook_headings() -> list[str]:
    """The Markdown headings of the report's notebooks, as text (no Markdown marks)."""
    headings = []
    for name in profiles.NOTEBOOKS:
        nb = nbformat.read(str(NOTEBOOKS_DIR / f"{name}.ipynb"), as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                for line in cell.source.splitlines():
                    if re.match(r"#{1,6} ", line):
                        headings.append(re.sub(r"[`*_]", "", line.lstrip("#").strip()))
    return headings


def test_the_html_report_shows_every_image_heading_and_table_within_the_page(smoke_report,
                                                                             tmp_path):
    tmp, _ = smoke_report
    html = tmp / "report" / "report.html"
    shots = Screenshots(tmp_path / "screenshots")
    print(f"screenshots: {shots.folder}")
    with chromium() as browser:
        page = browser.new_page(viewport=VIEWPORT)
        with shots.named_on_failure(page):
            page.goto(html.as_uri())
            page.wait_for_load_state("load")
            shots.take(page, "report-top")
            images = page.eval_on_selector_all(
                "img", "els => els.map(e => ({src: e.src.slice(0, 60), complete: e.complete, "
                       "width: e.naturalWidth}))")
            assert len(images) >= 10, "the report's figures"
            broken = [i for i in images if not (i["complete"] and i["width"] > 0)]
            assert not broken, f"images that did not load: {broken}"

            shown = [re.sub(r"[¶\s]+$", "", h).strip() for h in page.eval_on_selector_all(
                "h1, h2, h3, h4, h5, h6", "els => els.map(e => e.textContent)")]
            missing = [h for h in notebook_headings() if h not in shown]
            assert not missing, f"section headings missing from the HTML report: {missing}"

            width = page.evaluate("document.documentElement.clientWidth")
            tables = page.eval_on_selector_all(
                "table", "els => els.map(e => { const r = e.getBoundingClientRect(); "
                         "return {left: r.left, right: r.right, text: e.innerText.slice(0, 40)}; })")
            assert len(tables) >= 5, "the report's tables"
            wide = [t for t in tables if t["left"] < 0 or t["right"] > width]
            assert not wide, f"tables wider than the page ({width} px): {wide}"
            assert page.evaluate("document.documentElement.scrollWidth") <= width, \
                "the page scrolls sideways"
            page.locator("table").nth(len(tables) // 2).scroll_into_view_if_needed()
            shots.take(page, "report-a-table")
            page.locator("img").nth(len(images) // 2).scroll_into_view_if_needed()
            shots.take(page, "report-a-figure")
