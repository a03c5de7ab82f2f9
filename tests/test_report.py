"""Report helpers: tables, captions, generated discussions, the code-free report document."""
from __future__ import annotations

import base64
import io
import re

import nbformat
import pytest

from mura_core import formatting
from mura_core.report import document, prose, provenance, tables


def _png_bytes() -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 1))
    fig.add_subplot().plot([0, 1], [1, 0])
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=40)
    return buf.getvalue()


# --------------------------------------------------------------------------- tables


def test_markdown_table_formats_numbers_and_aligns_them_right():
    text = tables.markdown_table(
        [{"name": "conv1", "params": 3200, "acc": 0.5}, {"name": "fc|1", "params": 12, "acc": None}],
        {"name": "layer", "params": "parameters", "acc": "accuracy"})
    lines = text.splitlines()
    assert lines[0] == "| layer | parameters | accuracy |"
    assert lines[1] == "|:----|---------:|-------:|", "dashes follow the widest cell"
    assert lines[2] == "| conv1 | 3,200 | 0.500 |"
    assert lines[3] == "| fc\\|1 | 12 | – |", "a pipe in a cell must not split it"


def test_markdown_table_uses_custom_formats():
    text = tables.markdown_table([{"a": 0.6712}], formats={"a": formatting.percent})
    assert text.splitlines()[-1] == "| 67.1 % |"
    assert text.splitlines()[1] == "|-----:|"


def test_markdown_table_refuses_no_rows():
    with pytest.raises(ValueError):
        tables.markdown_table([])


def test_caption_says_synthetic_data_when_it_is():
    assert tables.caption("Loss", "Figure 2.1", synthetic=True) == \
        "**Figure 2.1.** *Loss. Synthetic data.*"
    assert tables.caption("Loss on synthetic data", synthetic=True) == "*Loss on synthetic data.*"
    assert "ynthetic" not in tables.caption("Loss", synthetic=False)


# --------------------------------------------------------------------------- discussions


def _arch_rows(valid: dict[str, float]) -> list[dict]:
    params = {"baseline": 100, "deeper": 150, "wider": 300, "residual": 110}
    return [{"name": n, "params": params[n], "seconds_per_step": params[n] / 100,
             "valid_accuracy": v, "train_accuracy": v + 0.05} for n, v in valid.items()]


def test_architecture_discussion_reports_the_measured_numbers():
    text = prose.architecture_discussion(
        _arch_rows({"baseline": 0.60, "deeper": 0.55, "wider": 0.72, "residual": 0.61}),
        steps=100)
    assert "wider 72.0 %, residual 61.0 %, baseline 60.0 %, deeper 55.0 %" in text
    assert "raised validation accuracy by 12.0 percentage points" in text
    assert "lowered validation accuracy by 5.0 percentage points" in text
    assert "3.00x the parameters" in text
    assert "best variant here is wider" in text
    assert "trained for 100 steps" in text


def test_architecture_discussion_follows_the_numbers_not_a_fixed_story():
    text = prose.architecture_discussion(
        _arch_rows({"baseline": 0.70, "deeper": 0.75, "wider": 0.60, "residual": 0.65}))
    assert "best variant here is deeper" in text
    assert "Width (more feature maps at every level) lowered" in text


def test_architecture_discussion_calls_small_spreads_noise():
    text = prose.architecture_discussion(
        _arch_rows({"baseline": 0.600, "deeper": 0.605, "wider": 0.61, "residual": 0.598}))
    assert "do not establish a ranking" in text


def test_architecture_discussion_says_when_a_variant_diverged():
    rows = _arch_rows({"baseline": 0.60, "deeper": 0.62, "wider": 0.58, "residual": 0.5})
    rows[3].update(valid_accuracy=None, train_accuracy=None, diverged=True, diverged_at_step=3)
    text = prose.architecture_discussion(rows, steps=20)
    assert "residual connections, training diverged (a non-finite loss at step 3)" in text
    assert "residual 50" not in text and "deeper 62.0 %" in text
    rows[0].update(valid_accuracy=None, diverged=True, diverged_at_step=2)
    assert "deeper 62.0 %" in prose.architecture_discussion(rows)


def test_sweep_discussion_names_best_and_worst_setting_and_divergence():
    rows = [{"value": 0.1, "valid_accuracy": 0.5, "final_train_loss": float("nan"),
             "diverged": True},
            {"value": 0.01, "valid_accuracy": 0.7, "final_train_loss": 0.4},
            {"value": 0.001, "valid_accuracy": 0.6, "final_train_loss": 0.6}]
    text = prose.sweep_discussion("learning rate", rows)
    assert "best validation accuracy was 70.0 % at 0.01" in text
    assert "worst 50.0 % at 0.1" in text
    assert "from 0.400 (0.01) to 0.600 (0.001)" in text
    assert "diverged (non-finite loss) at 0.1" in text


# --------------------------------------------------------------------------- document


def _executed_notebook() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("steps = 3", metadata={"tags": ["parameters"]})
    injected = nbformat.v4.new_code_cell("steps = 5", metadata={"tags": ["injected-parameters"]})
    prose = nbformat.v4.new_markdown_cell("# 02 Training\nSome prose.")
    code = nbformat.v4.new_code_cell("secret_code_line = plot_everything()")
    code.outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="step 1 loss 0.7\n"),
        nbformat.v4.new_output("stream", name="stderr", text="a warning\n"),
        nbformat.v4.new_output("display_data", data={
            "image/png": base64.b64encode(_png_bytes()).decode(), "text/plain": "<Figure>"}),
        nbformat.v4.new_output("display_data", data={"text/markdown": "| a |\n|--:|\n| 1 |"}),
        nbformat.v4.new_output("execute_result", data={"text/plain": "42"}, execution_count=1),
    ]
    skipped = nbformat.v4.new_markdown_cell("left out", metadata={"tags": ["report-skip"]})
    nb.cells = [prose, params, injected, code, skipped]
    return nb


def test_report_cells_keep_prose_figures_and_tables_but_no_code():
    cells = document.report_cells(_executed_notebook())
    kinds = [(c.cell_type, c.source) for c in cells]
    assert kinds[0] == ("markdown", "# 02 Training\nSome prose.")
    assert ("markdown", "| a |\n|--:|\n| 1 |") in kinds
    code_cells = [c for c in cells if c.cell_type == "code"]
    assert len(code_cells) == 1 and code_cells[0].source == ""
    assert [set(o["data"]) for o in code_cells[0].outputs] == [{"image/png"}]
    assert all("left out" not in c.source for c in cells)


def test_export_report_writes_html_without_code(tmp_path):
    path = tmp_path / "executed.ipynb"
    nbformat.write(_executed_notebook(), str(path))
    nb = document.build_report_notebook([path], ["# Front"], ["# Back\nprovenance"], title="T")
    written = document.export_report(nb, tmp_path / "out", pdf=False)
    html = written["html"].read_text()
    assert "secret_code_line" not in html and "steps = 5" not in html
    assert "step 1 loss" not in html and "a warning" not in html
    assert "Some prose." in html and "provenance" in html
    assert len(re.findall(r"<img[^>]+src=\"data:image/png;base64", html)) == 1


def test_export_report_falls_back_to_html_when_xelatex_is_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(document.shutil, "which", lambda tool: None)
    messages = []
    nb = document.build_report_notebook([], ["# Front"], [], title="T")
    written = document.export_report(nb, tmp_path, pdf=True, log=messages.append)
    assert set(written) == {"ipynb", "html"}
    assert not (tmp_path / "report.pdf").exists()
    assert "xelatex and pandoc not found" in messages[0]
    assert "texlive-xetex" in messages[0] and "report.html" in messages[0]


@pytest.mark.skipif(document.missing_pdf_tools() != [], reason="needs xelatex and pandoc")
def test_export_report_builds_a_pdf_with_the_figure(tmp_path):
    path = tmp_path / "executed.ipynb"
    nbformat.write(_executed_notebook(), str(path))
    nb = document.build_report_notebook([path], ["# Front"], [], title="T")
    written = document.export_report(nb, tmp_path / "out", pdf=True)
    assert written["pdf"].read_bytes()[:5] == b"%PDF-"


def test_provenance_section_lists_every_item():
    prov = {"data_source": "synthetic data, seed 3", "data_root": "/d", "profile": "quick",
            "input_size": 227, "backend": "numpy", "device": "CPU (x86_64)", "cpu_count": 2,
            "seed": 3, "git_commit": "abc123", "generated": "now",
            "versions": {"numpy": "2.0"},
            "notebooks": [{"name": "01_model", "wall_s": 12.3}], "total_wall_s": 300.0}
    text = provenance.provenance_section(prov)
    for expected in ("synthetic data, seed 3", "numpy on CPU (x86_64)", "| seed | 3 |",
                     "abc123", "version of numpy | 2.0", "wall time of 01_model | 12 s",
                     "5.0 min"):
        assert expected in text
