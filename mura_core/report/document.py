"""The report document: the executed notebooks merged into one notebook with no code, a front
matter and a provenance section, exported to HTML and (with XeLaTeX and pandoc) PDF.

``build_report_notebook`` keeps the Markdown cells and the figures and tables the notebooks
displayed (code, streams and warnings dropped); a cell tagged ``report-skip`` stays out.
The only module that imports nbformat and nbconvert.
"""
from __future__ import annotations

import copy
import shutil
from pathlib import Path

import nbformat

from ..experiments.profiles import ASSIGNMENT_INPUT_SIZE
from ..files import atomic_write_bytes, atomic_write_text
from .tables import HTML_ONLY, INTERVAL_COLUMNS, caption, headline_rows, table_block

SKIP_TAG = "report-skip"
PARAMETER_TAGS = {"parameters", "injected-parameters"}
# Output types the report keeps: figures, Markdown tables/text and their LaTeX forms;
# everything else (stdout, warnings, reprs like "<Figure ...>") is noise in a report.
KEPT_MIME_TYPES = ("image/png", "text/markdown", "text/latex")


def _keep_output(output) -> dict | None:
    if output.get("output_type") not in ("display_data", "execute_result"):
        return None
    data = {k: v for k, v in output.get("data", {}).items() if k in KEPT_MIME_TYPES}
    if not data:
        return None
    kept = nbformat.v4.new_output("display_data", data=data)
    if output.get("metadata"):
        kept["metadata"] = copy.deepcopy(output["metadata"])
    return kept


def _latex_cell(latex: str):
    return nbformat.v4.new_raw_cell(latex, metadata={"raw_mimetype": "text/latex"})


def _html_only(cell):
    cell.metadata.setdefault("tags", []).append(HTML_ONLY)
    return cell


def block_cells(block) -> list:
    """Report cells of a Markdown string (both formats through pandoc), or of a dict with
    ``text/markdown`` and ``text/latex`` (HTML gets the first, PDF the second)."""
    if isinstance(block, str):
        return [nbformat.v4.new_markdown_cell(block)]
    cells = [nbformat.v4.new_markdown_cell(block["text/markdown"])]
    if "text/latex" in block:
        cells = [_html_only(cells[0]), _latex_cell(block["text/latex"])]
    return cells


def report_cells(executed: nbformat.NotebookNode) -> list:
    """The cells of an executed notebook that belong in the report, with no code.

    Markdown cells are kept; a code cell keeps only its figure and Markdown outputs (a
    Markdown output with a LaTeX form gives a Markdown cell for the HTML and a raw LaTeX cell
    for the PDF), with its source emptied; parameter cells and cells tagged ``report-skip``
    are dropped.
    """
    cells = []
    for cell in executed.cells:
        tags = set(cell.get("metadata", {}).get("tags", []))
        if tags & (PARAMETER_TAGS | {SKIP_TAG}):
            continue
        if cell.cell_type == "markdown":
            cells.append(nbformat.v4.new_markdown_cell(cell.source))
        elif cell.cell_type == "code":
            outputs = [o for o in map(_keep_output, cell.get("outputs", [])) if o]
            for out in outputs:
                if "text/markdown" in out["data"]:
                    cells.extend(block_cells(dict(out["data"])))
                elif "image/png" in out["data"]:
                    code = nbformat.v4.new_code_cell("")
                    code.outputs = [out]
                    if out.get("metadata", {}).get("report") == HTML_ONLY:
                        _html_only(code)
                    cells.append(code)
    return cells


def build_report_notebook(executed_paths: list[Path], front: list, back: list,
                          title: str) -> nbformat.NotebookNode:
    """One notebook: the ``front`` blocks, the report cells of each executed notebook in
    order, then the ``back`` blocks (e.g. the provenance table); a block is Markdown text or
    a dict of its Markdown and LaTeX forms (see ``block_cells``)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["title"] = title
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    # The notebooks number their own sections (the HTML has no numbering of its own), so
    # LaTeX must not number them a second time.
    nb.cells.append(nbformat.v4.new_raw_cell("\\setcounter{secnumdepth}{0}",
                                             metadata={"raw_mimetype": "text/latex"}))
    for block in front:
        nb.cells.extend(block_cells(block))
    for path in executed_paths:
        nb.cells.extend(report_cells(nbformat.read(str(path), as_version=4)))
    for block in back:
        nb.cells.extend(block_cells(block))
    return nb


def missing_pdf_tools() -> list[str]:
    """The programs nbconvert's PDF export needs that are not on PATH."""
    return [tool for tool in ("xelatex", "pandoc") if shutil.which(tool) is None]


def _exporter_config(pdf: bool = False):
    from traitlets.config import Config

    config = Config()
    config.TemplateExporter.exclude_input = True
    config.TemplateExporter.exclude_input_prompt = True
    config.TemplateExporter.exclude_output_prompt = True
    if pdf:  # the PDF has the LaTeX forms of these cells
        config.TagRemovePreprocessor.enabled = True
        config.TagRemovePreprocessor.remove_cell_tags = {HTML_ONLY}
    return config


def export_report(nb: nbformat.NotebookNode, out_dir: Path, stem: str = "report",
                  pdf: bool = True, log=print) -> dict[str, Path]:
    """Write ``stem.ipynb``, ``stem.html`` and (when possible) ``stem.pdf`` into ``out_dir``.

    The PDF goes through nbconvert's LaTeX exporter and XeLaTeX. When XeLaTeX or pandoc is
    missing, a message says what to install and only the HTML is built. Returns the paths
    written, by format.
    """
    from nbconvert import HTMLExporter, PDFExporter

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    path = out_dir / f"{stem}.ipynb"
    atomic_write_text(path, nbformat.writes(nb))
    written["ipynb"] = path

    body, _ = HTMLExporter(config=_exporter_config()).from_notebook_node(nb)
    path = out_dir / f"{stem}.html"
    atomic_write_text(path, body)
    written["html"] = path

    if pdf:
        missing = missing_pdf_tools()
        if missing:
            log(f"report: {' and '.join(missing)} not found, so no PDF was built; the HTML "
                f"report is {written['html']}. Install texlive-xetex texlive-fonts-recommended "
                "texlive-plain-generic pandoc (Debian/Ubuntu: `make tex`) for the PDF.")
        else:
            exporter = PDFExporter(config=_exporter_config(pdf=True))
            # The PDF goes through LaTeX, so it takes the LaTeX raw cells too.
            exporter.raw_mimetypes = [*exporter.raw_mimetypes, "text/latex"]
            body, _ = exporter.from_notebook_node(nb)
            path = out_dir / f"{stem}.pdf"
            atomic_write_bytes(path, body)
            written["pdf"] = path
    return written



def front_matter(prov: dict, results: dict[str, dict]) -> list:
    """The report's opening blocks: what was run on what, and the headline numbers.

    ``prov``: the pipeline's provenance dict; ``results``: notebook name -> its results JSON
    (missing notebooks are simply not summarized)."""
    synthetic = prov.get("synthetic", False)
    size = prov.get("input_size")
    intro = [
        "# About this report",
        "",
        "A convolutional network written from scratch (NumPy/CuPy, no deep-learning "
        "framework) classifies musculoskeletal radiographs as normal or abnormal "
        "(MURA v1.1). Each section below is one notebook of the project, executed by "
        f"`python -m mura_core report` with the **{prov.get('profile')}** profile "
        f"({size}x{size} input, backend {prov.get('backend')}, seed {prov.get('seed')}); the "
        "code is left out, the figures, tables and discussions are the notebooks' own output. "
        "The network's output is P(normal): label 1 is normal, 0 abnormal.",
        "",
        f"**Data: {prov.get('data_source')}.**",
    ]
    if size and size != ASSIGNMENT_INPUT_SIZE:
        why = prov.get("profile_why")
        intro += ["", f"**Input size: every network in this report is trained and evaluated at "
                      f"{size}x{size}, not the assignment's {ASSIGNMENT_INPUT_SIZE}x"
                      f"{ASSIGNMENT_INPUT_SIZE}** (section 1 shows the network at "
                      f"{ASSIGNMENT_INPUT_SIZE}x{ASSIGNMENT_INPUT_SIZE}; the "
                      "layers are the same, only the first fully connected layer's input count "
                      f"changes)" + (f": {why}." if why else ".")
                      + " `make report PROFILE=full` trains at "
                      f"{ASSIGNMENT_INPUT_SIZE}x{ASSIGNMENT_INPUT_SIZE} on a GPU."]
    if synthetic:
        intro += [
            "",
            "No MURA folder was given, so the pipeline generated a synthetic data set with "
            "MURA's exact layout (body parts, patients, studies, CSV files) and a learnable "
            "signal. **Every number and figure in this report comes from that synthetic set** "
            "and says nothing about real radiographs; run `make report MURA_DIR=... "
            "PROFILE=full` for the real thing.",
        ]
    blocks = ["\n".join(intro)]
    rows = headline_rows(results)
    if rows:
        blocks.append("## Headline results\n\nValid metrics with 95 % confidence intervals "
                      "(bootstrap over patients, and over seeds where a network was trained "
                      "from several).")
        blocks.append(table_block(
            rows, {"what": "model / setting", **INTERVAL_COLUMNS},
            caption("Validation metrics of every trained network; the majority-class row "
                    "predicts one class for every image", synthetic=synthetic)))
    return blocks
