"""JupyterLab in Chromium, used as a person uses it: notebook 02 run with Run All Cells trains
its run with a progress bar and live curves and gives the numbers and outputs of the
papermill run; the explorer (07) on the report's runs follows a change of study."""
from __future__ import annotations

import json

import pytest
from browser import (
    VIEWPORT,
    Screenshots,
    chromium,
    lab_notebook,
    lab_server,
    needs_browser,
    open_notebook,
    outputs,
    run_all,
    save,
    wait_for_idle_kernel,
)

from mura_core.experiments import profiles
from mura_core.report.workspace import NOTEBOOKS_DIR

pytestmark = [pytest.mark.slow, needs_browser()]

#: The hash of what an <img> shows (its bytes, fetched from its blob or data URL), by selector:
#: the last one on the page that is laid out (a view Lab has detached keeps its old picture).
IMAGE_HASH = """async (selector) => {
    const shown = [...document.querySelectorAll(selector)].filter(e => e.getClientRects().length);
    const e = shown[shown.length - 1];
    const img = e && (e.tagName === 'IMG' ? e : e.querySelector('img'));
    if (!img || !img.src) return null;
    const bytes = new Uint8Array(await (await fetch(img.src)).arrayBuffer());
    let h = 0;
    for (const b of bytes) h = (h * 31 + b) >>> 0;
    return `${bytes.length}:${h}`;
}"""


@pytest.fixture(scope="module")
def lab(smoke_report, tmp_path_factory):
    """JupyterLab on copies of notebooks 02 and 07 at the smoke profile: 02 in a new work
    folder (it trains), 07 on the smoke report's (its runs are reused); and a Chromium."""
    tmp, _ = smoke_report
    root = tmp_path_factory.mktemp("lab")
    fresh = {"profile": "smoke", "work_dir": str(root / "work"), "out_dir": str(root / "report"),
             "figures_dir": str(root / "figures")}
    reused = dict(fresh, work_dir=str(tmp / "work"), out_dir=str(root / "explorer"))
    notebooks = root / "notebooks"
    lab_notebook(NOTEBOOKS_DIR / "02_training.ipynb", notebooks, **fresh)
    lab_notebook(NOTEBOOKS_DIR / f"{profiles.EXPLORER}.ipynb", notebooks, **reused)
    shots = Screenshots(root / "screenshots")
    print(f"screenshots: {shots.folder}")
    with lab_server(notebooks, root / "home") as server, chromium() as browser:
        yield {"server": server, "browser": browser, "root": root, "shots": shots,
               "notebooks": notebooks, "smoke": tmp}


def _errors(page) -> list[str]:
    """The tracebacks Lab shows in output areas."""
    texts = page.eval_on_selector_all(
        '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]',
        "els => els.map(e => e.innerText)")
    return [t[:300] for t in texts if "Traceback" in t or "Error" in t]


WIDGET = "application/vnd.jupyter.widget-view+json"


def _kinds(nb) -> list[list[tuple]]:
    """Per code cell of the notebook (not papermill's injected one), its outputs' kinds (type
    and MIME types), not their text; the live widgets, which only Lab shows, left out."""
    return [[(o.output_type, tuple(sorted(o.get("data", {})))) for o in cell.outputs
             if o.output_type != "stream" and WIDGET not in o.get("data", {})]
            for cell in nb.cells if cell.cell_type == "code"
            and "injected-parameters" not in cell.metadata.get("tags", [])]


def _text(shown: str) -> str:
    """What the browser shows, with its non-breaking spaces (in option labels) as spaces."""
    return shown.replace("\xa0", " ")


def _without_paths(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "path"} for row in rows]


def test_notebook_02_run_all_in_lab_trains_live_and_matches_the_papermill_run(lab):
    import nbformat

    shots, root = lab["shots"], lab["root"]
    page = lab["browser"].new_page(viewport=VIEWPORT)
    with shots.named_on_failure(page):
        open_notebook(page, lab["server"], "02_training.ipynb")
        shots.take(page, "lab-02-opened")
        run_all(page)
        assert not _errors(page), _errors(page)
        assert page.locator(".jp-OutputArea-output .widget-hprogress").count() >= 1, \
            "a tqdm notebook bar for the run"
        curves = page.locator(".jp-OutputArea-output img.mura-live-curves")
        assert curves.count() == 1
        curves.scroll_into_view_if_needed()
        shots.take(page, "lab-02-trained-live-curves")
        assert page.locator(".jp-OutputArea-output img").count() >= 3, "the figures"
        assert page.locator(".jp-OutputArea-output table").count() >= 1, "the tables"
        page.locator(".jp-OutputArea-output table").last.scroll_into_view_if_needed()
        shots.take(page, "lab-02-table-and-figure")
        saved = save(page, lab["notebooks"] / "02_training.ipynb")
    assert not [o for o in outputs(saved) if o.output_type == "error"]
    papermill = nbformat.read(str(lab["smoke"] / "report" / "executed" / "02_training.ipynb"), 4)
    assert _kinds(saved) == _kinds(papermill), "the outputs of the papermill run, in order"
    ours = json.loads((root / "report" / "results" / "02_training.json").read_text())
    theirs = json.loads((lab["smoke"] / "report" / "results" / "02_training.json").read_text())
    assert ours["history"]["loss"] == theirs["history"]["loss"]
    assert ours["history"]["evals"] == theirs["history"]["evals"]
    assert _without_paths(ours["predictions"]) == _without_paths(theirs["predictions"])


def test_the_explorer_in_lab_redraws_grad_cam_for_another_study(lab):
    shots = lab["shots"]
    page = lab["browser"].new_page(viewport=VIEWPORT)
    with shots.named_on_failure(page):
        open_notebook(page, lab["server"], f"{profiles.EXPLORER}.ipynb")
        run_all(page)
        assert not _errors(page), _errors(page)
        page.wait_for_selector(".mura-gradcam", timeout=30_000)
        text = page.locator(".jp-NotebookPanel").inner_text()
        assert "reusing the completed run" in text and "Both were loaded from the run store" in text
        study = page.locator(".widget-dropdown", has=page.locator("label", has_text="study"))
        study.scroll_into_view_if_needed()
        first = page.evaluate(IMAGE_HASH, ".mura-gradcam")
        assert first is not None
        label = _text(study.locator("select option:checked").inner_text())
        assert ", abnormal, " in label, "the explorer opens on an abnormal image"
        page.locator(".mura-gradcam").scroll_into_view_if_needed()
        shots.take(page, "explorer-abnormal")
        options = study.locator("select option").all_inner_texts()
        normal = next(o for o in options if ", normal, " in _text(o))
        study.locator("select").select_option(label=normal)
        redrawn = (f"async () => ({IMAGE_HASH})('.mura-gradcam')"
                   f".then(h => h !== null && h !== {json.dumps(first)})")
        page.wait_for_function(redrawn, timeout=30_000)
        wait_for_idle_kernel(page, 30)
        page.wait_for_function(redrawn, timeout=30_000)  # and still so, once the kernel is idle
        assert ", normal, " in _text(study.locator("select option:checked").inner_text())
        page.locator(".mura-gradcam").scroll_into_view_if_needed()
        shots.take(page, "explorer-normal")
