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


def test_intervals_never_show_a_negative_zero():
    assert formatting.interval(0.0, -0.00004, 0.0, kind="float") == "0.000 (0.000 to 0.000)"
    assert formatting.interval(0.5, -0.00001, 0.9) == "50.0 % (0.0 to 90.0)"
    assert formatting.interval(-0.25, -0.5, -0.0004, kind="float") == "-0.250 (-0.500 to 0.000)"
    assert formatting.percent(-0.0123) == "-1.2 %"


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


# --------------------------------------------------------------------------- LaTeX forms


def test_latex_inline_escapes_specials_and_keeps_emphasis():
    assert tables.latex_inline("**Table 1.1.** *50 % of x_y & #3.* `a_b`") == (
        r"\textbf{Table 1.1.} \textit{50 \% of x\_y \& \#3.} \texttt{a\_b}")
    assert tables.latex_escape("{~^\\$}") == (
        r"\{\textasciitilde{}\textasciicircum{}\textbackslash{}\$\}")


def test_table_block_has_both_forms_from_the_same_cells():
    rows = [{"name": "conv1", "acc": 0.5}, {"name": "x" * 60, "acc": None}]
    block = tables.table_block(rows, {"name": "layer", "acc": "accuracy"}, "*Cap.*",
                               formats={"acc": formatting.percent})
    md, latex = block["text/markdown"], block["text/latex"]
    assert md.startswith("*Cap.*\n\n| layer | accuracy |") and "| conv1 | 50.0 % |" in md
    assert latex.startswith(r"\begin{table}[H]") and latex.endswith(r"\end{table}")
    assert r"conv1 & 50.0 \% \\" in latex and r"\textit{Cap.}" in latex
    assert r"\begin{tabular}{p{0.55\linewidth}r}" in latex, "a long text column wraps"
    assert latex.index(r"\textit{Cap.}") < latex.index(r"\begin{tabular}"), "caption above"


def test_figure_caption_and_file_stay_in_one_float(tmp_path):
    latex = tables.latex_figure(tmp_path / "a_b.pdf", "**Figure 2.1.** *Loss.*")
    assert latex.startswith(r"\begin{figure}[H]") and latex.endswith(r"\end{figure}")
    assert (tmp_path / "a_b.pdf").as_posix() in latex
    assert latex.index("includegraphics") < latex.index(r"\textbf{Figure 2.1.}")


# --------------------------------------------------------------------------- discussions


def _row(name, acc, low, high, params=100, seconds=1.0, **extra):
    return {"name": name, "params": params, "seconds_per_step": seconds,
            "image_accuracy": acc, "image_accuracy_low": low, "image_accuracy_high": high,
            "final_train_loss": 0.4, **extra}


def _cmp(name, diff, low, high, a_only, b_only, p, verdict, per_seed=None, reasons=None):
    """A ``stats.compare`` result built by hand; ``per_seed``: each seed pair's difference."""
    per_seed = per_seed if per_seed is not None else [diff]
    return {"name": name, "metric": "image_accuracy", "difference": diff, "low": low,
            "high": high, "a_only": a_only, "b_only": b_only, "p_value": p, "verdict": verdict,
            "seeds": len(per_seed), "per_seed": [{"difference": d} for d in per_seed],
            "same_sign": len({d > 0 for d in per_seed}) == 1 and 0 not in per_seed,
            "detectable": (high - low) / 2, "reasons": reasons or [], "diverged": False}


def test_architecture_discussion_states_a_winner_in_every_seed_and_a_tie():
    rows = [_row("baseline", 0.70, 0.66, 0.74, image_accuracy_seeds=[0.69, 0.70, 0.71]),
            _row("deeper", 0.85, 0.82, 0.88, params=150, image_accuracy_seeds=[0.84, 0.85, 0.86]),
            _row("wider", 0.71, 0.67, 0.75, params=300, seconds=3.5)]
    comparisons = [_cmp("deeper", 0.15, 0.10, 0.20, 270, 45, 1e-8, "a",
                        per_seed=[0.15, 0.14, 0.16]),
                   _cmp("wider", 0.01, -0.03, 0.05, 90, 75, 0.27, None,
                        per_seed=[0.03, -0.01, 0.01], reasons=["interval", "test", "sign"])]
    text = prose.architecture_discussion(rows, comparisons, steps=300, seeds=3)
    assert "trained for 300 steps from each of 3 seeds" in text
    assert "bootstrap over seeds and patients within seeds" in text
    assert "baseline 70.0 % (66.0 to 74.0), seeds 69.0 to 71.0 %" in text
    assert ("Depth (two more convolutions and one more fully connected layer) raised the valid "
            "accuracy per image over the baseline by +15.0 points (95 % interval +10.0 to "
            "+20.0; per seed +15.0, +14.0, +16.0; stratified McNemar p < 0.001, 270 against 45 "
            "images") in text
    assert ("the interval excludes zero, the paired test agrees and all 3 seed pairs point the "
            "same way, so the difference is established") in text
    assert "1.50x the parameters" in text
    assert ("Width (twice the feature maps at every convolution) against the baseline: the "
            "difference in valid accuracy per image, +1.0 points (95 % interval -3.0 to +5.0; "
            "per seed +3.0, -1.0, +1.0; stratified McNemar p = 0.270") in text
    assert ("is not established (its interval includes zero; the paired test does not reject "
            "equal accuracy in that direction; the seed pairs do not all point the same way); "
            "this comparison could detect a difference of about 4.0 points") in text
    assert "3.50x the time per training step" in text
    assert "Established differences: deeper" in text


def test_a_winner_in_one_seed_only_is_not_claimed():
    """The interval and the pooled test lean one way, but one seed pair carries it all."""
    rows = [_row("baseline", 0.70, 0.66, 0.74), _row("residual", 0.74, 0.701, 0.78)]
    text = prose.architecture_discussion(
        rows, [_cmp("residual", 0.04, 0.001, 0.08, 60, 24, 0.0001, None,
                    per_seed=[0.12, 0.0, 0.0], reasons=["sign"])], seeds=3)
    assert "raised" not in text and "lowered" not in text
    assert ("is not established (the seed pairs do not all point the same way)") in text
    assert "per seed +12.0, +0.0, +0.0" in text and "does not rank them" in text


def test_architecture_discussion_claims_nothing_when_nothing_is_established():
    rows = [_row("baseline", 0.70, 0.66, 0.74), _row("residual", 0.72, 0.68, 0.76)]
    # The interval excludes zero but McNemar does not agree: not established either.
    text = prose.architecture_discussion(
        rows, [_cmp("residual", 0.02, 0.001, 0.04, 20, 12, 0.22, None, reasons=["test"])])
    assert "raised" not in text and "lowered" not in text
    assert "is not established (the paired test does not reject" in text
    assert "does not rank them" in text


def test_architecture_discussion_says_when_a_variant_diverged():
    rows = [_row("baseline", 0.70, 0.66, 0.74),
            _row("residual", None, None, None, diverged=True, diverged_at_step=3)]
    text = prose.architecture_discussion(
        rows, [{"name": "residual", "metric": "image_accuracy", "verdict": None,
                "diverged": True}])
    assert "Residual connections: no comparison with the baseline, since a run diverged" in text
    assert "residual –" not in text and "baseline 70.0 %" in text


def test_sweep_discussion_compares_with_the_centre_value():
    rows = [dict(_row("learning rate 0.1", None, None, None), value=0.1, diverged=True),
            dict(_row("learning rate 0.01", 0.80, 0.76, 0.84), value=0.01),
            dict(_row("learning rate 0.001", 0.60, 0.55, 0.65), value=0.001,
                 final_train_loss=0.6)]
    comparisons = [{"name": "learning rate 0.1", "metric": "image_accuracy", "verdict": None,
                    "diverged": True},
                   _cmp("learning rate 0.001", -0.2, -0.26, -0.14, 5, 70, 1e-12, "b",
                        per_seed=[-0.21, -0.19])]
    text = prose.sweep_discussion("learning rate", rows, comparisons, "learning rate 0.01")
    assert "0.01: 80.0 % (76.0 to 84.0); 0.001: 60.0 % (55.0 to 65.0)" in text
    assert "from 0.400 (0.01) to 0.600 (0.001)" in text
    assert "diverged (a non-finite loss) at 0.1" in text
    assert ("A learning rate 0.001 lowered the valid accuracy per image against the centre "
            "value (learning rate 0.01), by -20.0 points (95 % interval -26.0 to -14.0; per "
            "seed -21.0, -19.0") in text
    assert "all 2 seed pairs point the same way, so the difference is established" in text


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
    heading, block = provenance.provenance_section(prov)
    assert heading.startswith("# Provenance")
    text = block["text/markdown"]
    for expected in ("synthetic data, seed 3", "numpy on CPU (x86_64)", "| seed | 3 |",
                     "abc123", "version of numpy | 2.0", "wall time of 01_model | 12 s",
                     "5.0 min"):
        assert expected in text
    assert r"wall time of 01\_model & 12 s \\" in block["text/latex"]


def test_html_gets_the_markdown_form_and_the_pdf_the_latex_one(tmp_path):
    nb = document.build_report_notebook(
        [], [tables.table_block([{"a": 1}], None, "*Only once.*")], [], title="T")
    tagged = [c for c in nb.cells if "html-only" in c.metadata.get("tags", [])]
    raw = [c for c in nb.cells if c.cell_type == "raw" and "Only once" in c.source]
    assert len(tagged) == 1 and tagged[0].cell_type == "markdown" and len(raw) == 1
    written = document.export_report(nb, tmp_path, pdf=document.missing_pdf_tools() == [])
    html = written["html"].read_text()
    assert html.count("Only once.") == 1 and "begin{table}" not in html
    if "pdf" in written:
        import subprocess

        text = subprocess.run(["pdftotext", str(written["pdf"]), "-"], capture_output=True,
                              text=True, check=True).stdout
        assert text.count("Only once.") == 1


def _localized(ratio_low: float, ratio_high: float) -> dict:
    row = {"sign": "all", "images": 40, "zero_maps": 2, "share": 0.12, "uniform_share": 0.03,
           "ratio": 4.0, "ratio_low": ratio_low, "ratio_high": ratio_high, "peak_inside": 0.3}
    kinds = [dict(row, sign="fracture", images=1), dict(row, sign="implant", images=39)]
    return {"abnormal_images": 60, "without_sign": 12, "sign_too_small": 1, "rows": [*kinds, row]}


def test_localization_summary_claims_a_concentration_only_when_the_interval_says_so():
    above = prose.localization_summary(_localized(3.1, 5.2))
    assert "12 were drawn without a sign and 1 has a sign too small" in above
    assert "40 remain (2 of them with an all-zero map" in above
    assert "12.0 %" in above and "3.0 %" in above and "4.00 times" in above
    assert "3.10 to 5.20" in above and "do concentrate on the signs" in above
    assert "fractures 12.0 % against 3.0 % (1 image)" in above
    unclear = prose.localization_summary(_localized(0.8, 1.6))
    assert "not distinguishable from a uniform one" in unclear and "concentrate" not in unclear
    assert "avoid the signs" in prose.localization_summary(_localized(0.2, 0.9))
    rows = tables.localization_rows(_localized(3.1, 5.2))
    assert rows[-1] == {"map": "Grad-CAM", "sign": "all signs", "images": 40, "zero_maps": 2,
                        "share": "12.0 %", "uniform_share": "3.0 %",
                        "ratio": "4.00 (3.10 to 5.20)", "peak_inside": "30.0 %"}
    both = dict(_localized(3.1, 5.2), input_gradient=_localized(1.5, 2.5)["rows"])
    assert [r["map"] for r in tables.localization_rows(both)] == ["Grad-CAM"] * 3 + ["input gradient"] * 3
    assert "The input gradient of the same score puts 12.0 %" in prose.localization_summary(both)
    assert "1.50 to 2.50" in prose.localization_summary(both)


def test_paper_kappa_rows_quote_the_mura_table_beside_ours():
    kappas = [{"body_part": "XR_WRIST", "studies": 30, "value": 0.5, "low": 0.3, "high": 0.7},
              {"body_part": "all", "studies": 90, "value": 0.4, "low": None, "high": None}]
    rows = tables.paper_kappa_rows(kappas)
    assert rows == [
        {"body_part": "wrist", "studies": 30, "ours": "0.500 (0.300 to 0.700)",
         "paper_model": "0.931 (0.922 to 0.940)", "radiologist": "0.931"},
        {"body_part": "overall", "studies": 90, "ours": "0.400",
         "paper_model": "0.705 (0.700 to 0.710)", "radiologist": "0.778"}]
    assert set(tables.MURA_PAPER_KAPPA) == {"elbow", "finger", "forearm", "hand", "humerus",
                                           "shoulder", "wrist", "overall"}
    assert "not comparable" in prose.paper_comparison_note(True)
    assert "valid split" in prose.paper_comparison_note(False)


def test_sample_predictions_note_counts_the_shown_images_and_points_to_the_whole_split():
    shown = [{"predicted": "normal", "truth": "normal"}, {"predicted": "normal", "truth": "abnormal"},
             {"predicted": "abnormal", "truth": "abnormal"}, {"predicted": "normal", "truth": "abnormal"}]
    text = prose.sample_predictions_note(shown, 0.848)
    assert "These 4 images" in text and "1 normal, 3 abnormal" in text
    assert "classifies 2 of them correctly" in text and "84.8 %" in text
    assert "84.8" not in prose.sample_predictions_note(shown, None)
