"""Report content and the report document.

Two halves:

- What a notebook shows: ``markdown_table`` (a list of dicts as a Markdown table, which
  nbconvert renders as a real table in HTML and, through pandoc, in LaTeX), ``caption``,
  the generated discussions (``architecture_discussion``, ``sweep_discussion``), written
  only from measured numbers.
- The document: ``build_report_notebook`` merges the executed notebooks into one notebook
  with no code (markdown cells and the figures/tables they displayed; code, streams and
  warnings dropped), a data section and a provenance table; ``export_report`` turns it into
  ``report.html`` and, when XeLaTeX and pandoc are installed, ``report.pdf``.

A cell tagged ``report-skip`` in a notebook stays out of the report.
"""
from __future__ import annotations

import copy
import math
import os
import shutil
from pathlib import Path

import nbformat

SKIP_TAG = "report-skip"
PARAMETER_TAGS = {"parameters", "injected-parameters"}
# Output types the report keeps: figures and Markdown tables/text; everything else (stdout,
# warnings, reprs like "<Figure ...>") is noise in a report.
KEPT_MIME_TYPES = ("image/png", "text/markdown")


# --------------------------------------------------------------------------- formatting


def format_value(value, digits: int = 3) -> str:
    """A table cell: ints with thousands separators, floats to ``digits`` significant-ish
    decimals, None/NaN as an en dash, everything else as ``str``."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        if value != 0 and abs(value) < 10 ** -digits:
            return f"{value:.{digits - 1}e}"
        return f"{value:,.{digits}f}"
    return str(value)


def percent(value) -> str:
    """0.6712 -> '67.1 %'; None/NaN -> '–'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{100 * value:.1f} %"


def _escape_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: list[dict], columns: list[str] | dict | None = None,
                   formats: dict | None = None, align: dict | None = None) -> str:
    """A Markdown pipe table from a list of dicts.

    ``columns``: the keys to show, in order (a list), or a dict ``key -> header``; default the
    keys of the first row. ``formats``: ``key -> callable(value) -> str``; default
    ``format_value``. Numbers are right-aligned unless ``align`` says otherwise
    (``key -> "l" | "r" | "c"``).
    """
    if not rows:
        raise ValueError("markdown_table needs at least one row")
    if columns is None:
        columns = list(rows[0])
    headers = dict(columns) if isinstance(columns, dict) else {c: c for c in columns}
    formats = formats or {}
    align = dict(align or {})
    for key in headers:
        if key not in align:
            numeric = all(isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)
                          for r in rows if r.get(key) is not None)
            align[key] = "r" if numeric and any(r.get(key) is not None for r in rows) else "l"
    body = [[_escape_cell(formats.get(k, format_value)(row.get(k))) for k in headers]
            for row in rows]
    head = [_escape_cell(str(h)) for h in headers.values()]
    # pandoc sizes the columns of a wide table by the dashes of this rule: make them follow
    # the longest cell (the longest word of the header), so no column is starved.
    widths = [max([len(r[i]) for r in body] + [max(map(len, head[i].split() or [""]))] + [3])
              for i in range(len(head))]
    rule = {"l": ":{}", "r": "{}:", "c": ":{}:"}
    lines = [
        "| " + " | ".join(head) + " |",
        "|" + "|".join(rule[align[k]].format("-" * (w - (2 if align[k] == "c" else 1)))
                       for k, w in zip(headers, widths)) + "|",
    ]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)


def caption(text: str, number: str | None = None, synthetic: bool = False) -> str:
    """An italic Markdown caption; says "synthetic data" when the numbers come from it."""
    label = f"**{number}.** " if number else ""
    suffix = " Synthetic data." if synthetic and "synthetic" not in text.lower() else ""
    body = text.rstrip()
    if body and body[-1] not in ".!?":
        body += "."
    return f"{label}*{body}{suffix}*"


# --------------------------------------------------------------------------- discussions


def _best(values: dict[str, float]) -> str:
    return max(values, key=lambda k: values[k])


def _ranked(values: dict[str, float]) -> list[str]:
    return sorted(values, key=lambda k: values[k], reverse=True)


def architecture_discussion(rows: list[dict], metric: str = "valid_accuracy",
                            steps: int | None = None, synthetic: bool = False) -> str:
    """A paragraph comparing depth, width and residual connections from measured numbers.

    ``rows``: one dict per architecture with at least ``name``, ``params`` (count),
    ``seconds_per_step``, ``metric`` (valid accuracy, 0..1) and optionally ``train_accuracy``
    and ``valid_kappa``. Everything said is computed from these numbers; nothing is assumed
    about which variant wins.
    """
    by_name = {r["name"]: r for r in rows}
    if "baseline" not in by_name:
        raise ValueError("architecture_discussion needs a 'baseline' row")
    base = by_name["baseline"]
    acc = {n: r[metric] for n, r in by_name.items() if r.get(metric) is not None}
    ranked = _ranked(acc)
    where = "on synthetic data" if synthetic else "on MURA's validation split"
    trained = f"for {steps:,} steps " if steps else ""
    parts = [
        f"All {len(rows)} variants were trained {trained}from the same seed with the same "
        f"optimizer settings. Ranked by validation accuracy per image {where}: "
        + ", ".join(f"{n} {percent(acc[n])}" for n in ranked) + "."
    ]
    for name, what in (("deeper", "Depth (two more convolutions and one more fully "
                                  "connected layer)"),
                       ("wider", "Width (more feature maps at every level)"),
                       ("residual", "Residual connections")):
        if name in by_name and by_name[name].get("diverged"):
            step = by_name[name].get("diverged_at_step")
            parts.append(f"With {what[0].lower() + what[1:]}, training diverged (a non-finite "
                         f"loss{f' at step {step}' if step else ''}) with these optimizer "
                         "settings, so that variant has no validation accuracy to compare; a "
                         "smaller learning rate would be needed.")
            continue
        if name not in by_name or name not in acc or "baseline" not in acc:
            continue
        r = by_name[name]
        diff = 100 * (acc[name] - acc["baseline"])
        if abs(diff) < 0.05:
            effect = "left validation accuracy unchanged"
        else:
            effect = (f"{'raised' if diff > 0 else 'lowered'} validation accuracy by "
                      f"{abs(diff):.1f} percentage points ({percent(acc[name])} against "
                      f"{percent(acc['baseline'])} for the baseline)")
        cost = ""
        if r.get("params") and base.get("params"):
            cost += f"{r['params'] / base['params']:.2f}x the parameters"
        if r.get("seconds_per_step") and base.get("seconds_per_step"):
            cost += (", " if cost else "") + (
                f"{r['seconds_per_step'] / base['seconds_per_step']:.2f}x the time per step")
        parts.append(f"{what} {effect}" + (f", at {cost}." if cost else "."))
    if "baseline" not in acc:
        return " ".join(parts)
    if all(r.get("train_accuracy") is not None for r in rows) and len(acc) == len(rows):
        gaps = {r["name"]: r["train_accuracy"] - r[metric] for r in rows}
        widest = max(gaps, key=lambda k: gaps[k])
        if 100 * (gaps[widest] - min(gaps.values())) < 0.5:
            parts.append(f"Train accuracy exceeds validation accuracy by about the same for "
                         f"every variant ({100 * gaps[widest]:.1f} points).")
        else:
            parts.append(
                f"The largest gap between train and validation accuracy is {widest}'s "
                f"({100 * gaps[widest]:.1f} points), the smallest "
                f"{min(gaps, key=lambda k: gaps[k])}'s "
                f"({100 * min(gaps.values()):.1f} points).")
    spread = 100 * (max(acc.values()) - min(acc.values()))
    if spread < 2.0:
        parts.append(
            f"The spread between the best and the worst variant is only {spread:.1f} points: "
            "at this training length the differences are within what another seed could "
            "change, so they do not establish a ranking.")
    else:
        parts.append(f"The best variant here is {ranked[0]}, {spread:.1f} points ahead of "
                     f"the worst ({ranked[-1]}).")
    return " ".join(parts)


def sweep_discussion(knob: str, rows: list[dict], metric: str = "valid_accuracy",
                     loss: str = "final_train_loss", unit: str = "") -> str:
    """A short paragraph on one hyperparameter sweep, from measured numbers.

    ``rows``: one dict per setting with ``value`` (the knob's value), ``metric`` and
    optionally ``loss`` (the last training loss) and ``diverged`` (bool).
    """
    values = {r["value"]: r for r in rows}
    acc = {v: r[metric] for v, r in values.items() if r.get(metric) is not None}
    if not acc:
        return f"No run of the {knob} sweep produced a validation measurement."
    best = _best(acc)
    worst = min(acc, key=lambda k: acc[k])
    fmt = (lambda v: f"{v:g}{unit}")
    parts = [f"Over {', '.join(fmt(v) for v in values)} for the {knob}, the best validation "
             f"accuracy was {percent(acc[best])} at {fmt(best)} and the worst "
             f"{percent(acc[worst])} at {fmt(worst)}"]
    losses = {v: r[loss] for v, r in values.items()
              if r.get(loss) is not None and math.isfinite(r[loss])}
    if len(losses) >= 2:
        low = min(losses, key=lambda k: losses[k])
        high = max(losses, key=lambda k: losses[k])
        parts[-1] += (f"; the final training loss ranged from {losses[low]:.3f} ({fmt(low)}) "
                      f"to {losses[high]:.3f} ({fmt(high)})")
    parts[-1] += "."
    diverged = [fmt(v) for v, r in values.items() if r.get("diverged")]
    if diverged:
        parts.append(f"Training diverged (non-finite loss) at {', '.join(diverged)}.")
    if 100 * (acc[best] - acc[worst]) < 2.0:
        parts.append("The differences are under 2 points, within run-to-run noise at this "
                     "training length.")
    return " ".join(parts)


# --------------------------------------------------------------------------- the document


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


def report_cells(executed: nbformat.NotebookNode) -> list:
    """The cells of an executed notebook that belong in the report, with no code.

    Markdown cells are kept; a code cell keeps only its figure and Markdown outputs, with its
    source emptied; parameter cells and cells tagged ``report-skip`` are dropped.
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
                # Markdown outputs become Markdown cells: LaTeX then gets real tables.
                if set(out["data"]) == {"text/markdown"}:
                    cells.append(nbformat.v4.new_markdown_cell(out["data"]["text/markdown"]))
                else:
                    code = nbformat.v4.new_code_cell("")
                    code.outputs = [out]
                    cells.append(code)
    return cells


def build_report_notebook(executed_paths: list[Path], front: list[str], back: list[str],
                          title: str) -> nbformat.NotebookNode:
    """One notebook: ``front`` Markdown cells, the report cells of each executed notebook in
    order, then ``back`` Markdown cells (e.g. the provenance table)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["title"] = title
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    # The notebooks number their own sections (the HTML has no numbering of its own), so
    # LaTeX must not number them a second time.
    nb.cells.append(nbformat.v4.new_raw_cell("\\setcounter{secnumdepth}{0}",
                                             metadata={"raw_mimetype": "text/latex"}))
    nb.cells.extend(nbformat.v4.new_markdown_cell(text) for text in front)
    for path in executed_paths:
        nb.cells.extend(report_cells(nbformat.read(str(path), as_version=4)))
    nb.cells.extend(nbformat.v4.new_markdown_cell(text) for text in back)
    return nb


def missing_pdf_tools() -> list[str]:
    """The programs nbconvert's PDF export needs that are not on PATH."""
    return [tool for tool in ("xelatex", "pandoc") if shutil.which(tool) is None]


def _exporter_config():
    from traitlets.config import Config  # noqa: PLC0415

    config = Config()
    config.TemplateExporter.exclude_input = True
    config.TemplateExporter.exclude_input_prompt = True
    config.TemplateExporter.exclude_output_prompt = True
    return config


def export_report(nb: nbformat.NotebookNode, out_dir: Path, stem: str = "report",
                  pdf: bool = True, log=print) -> dict[str, Path]:
    """Write ``stem.ipynb``, ``stem.html`` and (when possible) ``stem.pdf`` into ``out_dir``.

    The PDF goes through nbconvert's LaTeX exporter and XeLaTeX. When XeLaTeX or pandoc is
    missing, a message says what to install and only the HTML is built. Returns the paths
    written, by format.
    """
    from nbconvert import HTMLExporter, PDFExporter  # noqa: PLC0415

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    path = out_dir / f"{stem}.ipynb"
    _atomic_write_text(path, nbformat.writes(nb))
    written["ipynb"] = path

    body, _ = HTMLExporter(config=_exporter_config()).from_notebook_node(nb)
    path = out_dir / f"{stem}.html"
    _atomic_write_text(path, body)
    written["html"] = path

    if pdf:
        missing = missing_pdf_tools()
        if missing:
            log(f"report: {' and '.join(missing)} not found, so no PDF was built; the HTML "
                f"report is {written['html']}. Install texlive-xetex texlive-fonts-recommended "
                "texlive-plain-generic pandoc (Debian/Ubuntu: `make tex`) for the PDF.")
        else:
            exporter = PDFExporter(config=_exporter_config())
            # The PDF goes through LaTeX, so it takes the LaTeX raw cells too.
            exporter.raw_mimetypes = [*exporter.raw_mimetypes, "text/latex"]
            body, _ = exporter.from_notebook_node(nb)
            path = out_dir / f"{stem}.pdf"
            _atomic_write_bytes(path, body)
            written["pdf"] = path
    return written


def _atomic_write_text(path: Path, text: str) -> None:
    _atomic_write_bytes(path, text.encode("utf-8"))


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- report sections


def _seconds(value) -> str:
    if value is None:
        return "–"
    value = float(value)
    return f"{value:.0f} s" if value < 120 else f"{value / 60:.1f} min"


def front_matter(prov: dict, results: dict[str, dict]) -> list[str]:
    """The report's opening Markdown cells: what was run on what, and the headline numbers.

    ``prov``: the pipeline's provenance dict; ``results``: notebook name -> its results JSON
    (missing notebooks are simply not summarized).
    """
    synthetic = prov.get("synthetic", False)
    intro = [
        "# About this report",
        "",
        "A convolutional network written from scratch (NumPy/CuPy, no deep-learning "
        "framework) classifies musculoskeletal radiographs as normal or abnormal "
        "(MURA v1.1). Each section below is one notebook of the project, executed by "
        f"`python -m mura_core report` with the **{prov.get('profile')}** profile "
        f"({prov.get('input_size')}x{prov.get('input_size')} input, backend "
        f"{prov.get('backend')}, seed {prov.get('seed')}); the code is left out, the "
        "figures, tables and discussions are the notebooks' own output. The network's output "
        "is P(normal): label 1 is normal, 0 abnormal.",
        "",
        f"**Data: {prov.get('data_source')}.**",
    ]
    if synthetic:
        intro += [
            "",
            "No MURA folder was given, so the pipeline generated a synthetic data set with "
            "MURA's exact layout (body parts, patients, studies, CSV files) and a learnable "
            "signal. **Every number and figure in this report comes from that synthetic set** "
            "and says nothing about real radiographs; run `make report MURA_DIR=... "
            "PROFILE=full` for the real thing.",
        ]
    cells = ["\n".join(intro)]
    rows = headline_rows(results)
    if rows:
        cells.append("\n".join([
            "## Headline results",
            "",
            markdown_table(rows, {"what": "model / setting", "image": "valid acc. per image",
                                  "patient": "per patient", "study": "per study",
                                  "kappa": "study kappa"},
                           formats={"image": percent, "patient": percent, "study": percent}),
            "",
            caption("Validation metrics of every trained network"
                    + (" (synthetic data)" if synthetic else "")
                    + "; the majority-class row predicts one class for every image",
                    synthetic=synthetic),
        ]))
    return cells


def headline_rows(results: dict[str, dict]) -> list[dict]:
    """Validation metrics per trained model, from the results of notebooks 03 and 04."""
    rows = []
    evaluation = results.get("03_evaluation", {})
    valid = evaluation.get("metrics", {}).get("valid")
    if valid:
        rows.append({"what": "baseline (section 3)",
                     "image": valid.get("image_accuracy"),
                     "patient": valid.get("patient_accuracy"),
                     "study": valid.get("study_accuracy"), "kappa": valid.get("study_kappa")})
    for row in results.get("04_architectures", {}).get("table", []):
        rows.append({"what": f"{row['name']} (04)", "image": row.get("valid_accuracy"),
                     "patient": row.get("valid_patient_accuracy"),
                     "study": row.get("valid_study_accuracy"),
                     "kappa": row.get("valid_kappa")})
    base = (valid or {}).get("baseline")
    if base:
        rows.append({"what": "majority class (always "
                             f"{'normal' if base.get('class', 1) == 1 else 'abnormal'})",
                     "image": base.get("image_accuracy"),
                     "patient": base.get("patient_accuracy"),
                     "study": base.get("study_accuracy"), "kappa": base.get("study_kappa")})
    return rows


def provenance_section(prov: dict) -> str:
    """The provenance table (data, backend, device, seed, versions, commit, wall times)."""
    rows = [
        {"item": "data source", "value": prov.get("data_source")},
        {"item": "data folder", "value": f"`{prov.get('data_root')}`"},
        {"item": "profile", "value": f"{prov.get('profile')} "
                                     f"({prov.get('input_size')}x{prov.get('input_size')} input)"},
        {"item": "backend and device", "value": f"{prov.get('backend')} on {prov.get('device')}"
                                                f" ({prov.get('cpu_count')} CPU cores)"},
        {"item": "seed", "value": str(prov.get("seed"))},
        {"item": "git commit", "value": prov.get("git_commit")},
        {"item": "generated", "value": prov.get("generated")},
    ]
    rows += [{"item": f"version of {name}", "value": version}
             for name, version in prov.get("versions", {}).items()]
    rows += [{"item": f"wall time of {nb['name']}", "value": _seconds(nb["wall_s"])}
             for nb in prov.get("notebooks", [])]
    if prov.get("total_wall_s") is not None:
        rows.append({"item": "wall time of the whole pipeline (to the report build)",
                     "value": _seconds(prov["total_wall_s"])})
    return "\n".join([
        "# Provenance",
        "",
        "Where the numbers of this report come from.",
        "",
        markdown_table(rows, {"item": "item", "value": "value"}, align={"value": "l"}),
    ])


# --------------------------------------------------------------------------- figures


def image_grid(images, titles, ncols: int = 4, title: str | None = None,
               caption: str | None = None, cell: float = 2.1):
    """A grid of grayscale images (uint8 or float, (N, H, W)) with a title over each.

    Returns a ``matplotlib.figure.Figure`` (not registered with pyplot)."""
    from matplotlib.figure import Figure  # noqa: PLC0415

    images = list(images)
    if len(images) != len(titles):
        raise ValueError("image_grid needs one title per image")
    ncols = max(1, min(ncols, len(images)))
    nrows = max(1, math.ceil(len(images) / ncols))
    fig = Figure(figsize=(cell * ncols, cell * nrows + (0.5 if title else 0)
                          + (0.3 if caption else 0)), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, img, text in zip(axes.ravel(), images, titles):
        ax.imshow(img, cmap="gray", vmin=0, vmax=255 if getattr(img, "dtype", None) == "uint8"
                  else None)
        ax.set_title(text, fontsize=8)
    if title:
        fig.suptitle(title)
    if caption:
        fig.supxlabel(caption, fontsize=8)
    return fig
