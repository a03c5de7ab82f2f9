"""Tables and captions, in Markdown (HTML, JupyterLab) and LaTeX (the PDF), and the rows the
notebooks show."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..data.mura import body_part_name
from ..evaluation import metrics
from ..experiments.comparisons import SWEEP_KNOBS, sweep_label
from ..formatting import fixed, interval, number, p_value, percent
from .prose import seed_range, sweep_discussion

#: Output metadata (and cell tag) of what only the HTML report shows: the PDF has its LaTeX
#: form (a float holding figure or table and caption) in the raw LaTeX output beside it.
HTML_ONLY = "html-only"


def _escape_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _cells(rows: list[dict], columns, formats: dict | None, align: dict | None):
    """(headers dict key -> header, alignment key -> l|r|c, body rows of strings)."""
    if not rows:
        raise ValueError("a table needs at least one row")
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
    body = [[str(formats.get(k, number)(row.get(k))) for k in headers] for row in rows]
    return headers, align, body


def markdown_table(rows: list[dict], columns: list[str] | dict | None = None,
                   formats: dict | None = None, align: dict | None = None) -> str:
    """A Markdown pipe table from a list of dicts.

    ``columns``: the keys to show, in order (a list), or a dict ``key -> header``; default the
    keys of the first row. ``formats``: ``key -> callable(value) -> str``; default
    ``formatting.number``. Numbers are right-aligned unless ``align`` says otherwise
    (``key -> "l" | "r" | "c"``).
    """
    headers, align, body = _cells(rows, columns, formats, align)
    body = [[_escape_cell(c) for c in cells] for cells in body]
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


# --------------------------------------------------------------------------- LaTeX
# The PDF gets each table and figure as a float placed exactly here ([H]) that holds its
# caption: it never splits across a page break and its caption never lands on another page.
# (A Markdown table becomes a pandoc longtable, which splits, and a caption in a cell of its
# own can be separated from its figure.) The HTML keeps the Markdown and PNG forms.

_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                  "^": r"\textasciicircum{}"}
_INLINE = re.compile(r"(\*\*[^*]+\*\*|\*[^*]+\*|`[^`]+`)")
#: A left-aligned column with a cell longer than this wraps (p{} column) in LaTeX.
_WRAP_AT = 42


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def latex_inline(markdown: str) -> str:
    """Markdown with **bold**, *italic* and `code` spans as LaTeX, everything else escaped."""
    out = []
    for part in _INLINE.split(markdown):
        if part.startswith("**") and part.endswith("**") and len(part) > 4:
            out.append(r"\textbf{" + latex_inline(part[2:-2]) + "}")
        elif part.startswith("*") and part.endswith("*") and len(part) > 2:
            out.append(r"\textit{" + latex_inline(part[1:-1]) + "}")
        elif part.startswith("`") and part.endswith("`") and len(part) > 2:
            out.append(r"\texttt{" + latex_escape(part[1:-1]) + "}")
        else:
            out.append(latex_escape(part))
    return "".join(out)


def latex_table(rows: list[dict], columns=None, formats: dict | None = None,
                align: dict | None = None, caption_markdown: str | None = None) -> str:
    """The table of ``markdown_table`` as a LaTeX float with its caption above it, shrunk to
    the text width when wider; long left-aligned columns wrap."""
    headers, align, body = _cells(rows, columns, formats, align)
    spec = []
    for i, key in enumerate(headers):
        longest = max(len(r[i]) for r in body)
        if align[key] == "l" and longest > _WRAP_AT:
            spec.append(r"p{0.55\linewidth}")
        else:
            spec.append(align[key])
    lines = [r"\begin{table}[H]", r"\centering\small"]
    if caption_markdown:
        lines.append(r"\parbox{\linewidth}{\centering " + latex_inline(caption_markdown) + r"}\par\smallskip")
    lines += [r"\begin{adjustbox}{max width=\linewidth}",
              r"\begin{tabular}{" + "".join(spec) + "}", r"\toprule",
              " & ".join(r"\textbf{" + latex_inline(str(h)) + "}" for h in headers.values())
              + r" \\", r"\midrule"]
    lines += [" & ".join(latex_inline(c) for c in cells) + r" \\" for cells in body]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{adjustbox}", r"\end{table}"]
    return "\n".join(lines)


def latex_figure(path, caption_markdown: str) -> str:
    """A figure file (PDF or PNG) as a LaTeX float with its caption below it."""
    return "\n".join([
        r"\begin{figure}[H]", r"\centering",
        r"\includegraphics[width=\linewidth,height=0.42\textheight,keepaspectratio]{"
        + Path(path).resolve().as_posix() + "}",
        r"\par\smallskip",
        r"\parbox{\linewidth}{\small " + latex_inline(caption_markdown) + "}",
        r"\end{figure}",
    ])


def table_block(rows: list[dict], columns=None, caption_markdown: str | None = None,
                formats: dict | None = None, align: dict | None = None) -> dict:
    """A table in both forms: ``{"text/markdown": caption + table, "text/latex": float}``."""
    md = markdown_table(rows, columns, formats=formats, align=align)
    if caption_markdown:
        md = caption_markdown + "\n\n" + md
    return {"text/markdown": md,
            "text/latex": latex_table(rows, columns, formats, align, caption_markdown)}


#: The headline table's metric columns (valid metrics): key -> header.
INTERVAL_COLUMNS = {key: metrics.METRIC_NAMES[key] for key in (
    "image_accuracy", "patient_accuracy", "study_accuracy", "study_kappa")}


def with_intervals(row: dict, source: dict | None = None, keys=INTERVAL_COLUMNS) -> dict:
    """``row`` with each metric of ``keys`` replaced by its text with interval, read from
    ``source`` (default the row) as ``{key}``, ``{key}_low``, ``{key}_high`` or as an
    ``stats.intervals`` entry ``{key: {"value", "low", "high"}}``."""
    source = row if source is None else source
    out = dict(row)
    for key in keys:
        entry = source.get(key)
        if isinstance(entry, dict):
            value, low, high = entry.get("value"), entry.get("low"), entry.get("high")
        else:
            value, low, high = entry, source.get(f"{key}_low"), source.get(f"{key}_high")
        out[key] = interval(value, low, high, "float" if key == "study_kappa" else "pct")
    return out


def headline_rows(results: dict[str, dict]) -> list[dict]:
    """Valid metrics with 95 % intervals of every trained network (sections 3 and 4) and of
    the majority class, as display strings."""
    rows = []
    evaluation = results.get("03_evaluation", {})
    if evaluation.get("intervals"):
        rows.append(with_intervals({"what": "baseline (section 3)"}, evaluation["intervals"]))
    seeds = results.get("04_architectures", {}).get("seeds", 1)
    for row in results.get("04_architectures", {}).get("table", []):
        pooled = f", {seeds} seeds" if seeds > 1 else ""
        rows.append(with_intervals({"what": f"{row['name']} (section 4{pooled})"}, row))
    base = evaluation.get("metrics", {}).get("valid", {}).get("baseline")
    if base:
        cls = "normal" if evaluation["metrics"]["valid"].get("majority_class", 1) == 1 else "abnormal"
        rows.append(with_intervals({"what": f"majority class (always {cls})"}, base))
    return rows


def data_counts(cache) -> list[dict]:
    """Studies and images per body part and split (normal / abnormal), plus a total row.

    Counted from the cache, i.e. the images the network actually sees (undecodable files
    left out)."""
    rows = {}
    for split in ("train", "valid"):
        part = cache.split(split)
        labels = np.asarray(part.labels)
        for body in np.unique(part.body_parts).tolist():
            mask = part.body_parts == body
            row = rows.setdefault(body, {"body_part": body_part_name(body)})
            studies = {sid: lab for sid, lab in zip(part.study_ids[mask], labels[mask])}
            row[f"{split}_studies"] = len(studies)
            row[f"{split}_images"] = int(mask.sum())
            row[f"{split}_normal"] = int((labels[mask] == 1).sum())
            row[f"{split}_abnormal"] = int((labels[mask] == 0).sum())
    table = [rows[k] for k in sorted(rows)]
    total = {"body_part": "all"}
    for key in {k for r in table for k in r if k != "body_part"}:
        total[key] = sum(r.get(key, 0) for r in table)
    for r in table:
        for split in ("train", "valid"):
            for kind in ("studies", "images", "normal", "abnormal"):
                r.setdefault(f"{split}_{kind}", 0)
    return table + [total]



def prediction_rows(split, rows, probs) -> list[dict]:
    """One dict per predicted file: where it is (body part, patient, study, image, path),
    P(normal), the predicted and the true label."""
    out = []
    for row, prob in zip(rows, probs):
        path = Path(split.records[row].path)
        body, patient, study, image = path.parts[-4:]
        out.append({"body_part": body_part_name(body),
                    "patient": patient.removeprefix("patient"), "study": study,
                    "image": image, "path": str(path), "p_normal": float(prob),
                    "predicted": "normal" if prob >= 0.5 else "abnormal",
                    "truth": "normal" if split.labels[row] == 1 else "abnormal"})
    return out



def image_titles(split, rows, probs) -> list[str]:
    """Per shown image: 'body part, true label' over 'P(normal) 0.83'."""
    return [f"{body_part_name(split.body_parts[row])}, "
            f"{'normal' if split.labels[row] == 1 else 'abnormal'}\nP(normal) {float(p):.2f}"
            for row, p in zip(rows, probs)]


def metric_rows(tables: dict, intervals: dict | None = None) -> list[dict]:
    """Rows ``{"metric", "train", "valid"}`` (formatted strings) of ``evaluate_splits``, and
    ``"valid_interval"`` (the 95 % interval) where ``intervals`` (``stats.intervals`` of
    valid) has the metric."""
    rows = []
    for label, key, kind in metrics.METRIC_ROWS:
        row = {"metric": label, **{split: metrics.format_metric(metrics.metric_value(t, key),
                                                                kind, missing="–")
                                   for split, t in tables.items()}}
        if intervals is not None:
            ci = intervals.get(key) if isinstance(key, str) else None
            row["valid_interval"] = "–" if not ci or ci.get("low") is None else (
                f"{fixed(100 * ci['low'], 1)} to {fixed(100 * ci['high'], 1)} %" if kind == "pct"
                else f"{fixed(ci['low'], 3)} to {fixed(ci['high'], 3)}")
        rows.append(row)
    return rows


def body_part_rows(table: dict) -> list[dict]:
    """One row per body part of a metric table (counts and accuracies)."""
    return [{"body_part": body_part_name(part), **{
        k: t.get(k) for k in ("n_images", "image_accuracy", "patient_accuracy",
                              "study_accuracy", "study_kappa")}}
            for part, t in sorted(table["per_body_part"].items())]


#: Columns of a variant table (architectures, sweep values), with intervals.
VARIANT_COLUMNS = {"params": "parameters", "seconds_per_step": "s / step",
                   "final_train_loss": "final loss", "train_accuracy": "train acc.",
                   "image_accuracy": "valid acc. per image (95 % CI)",
                   "image_accuracy_range": "lowest to highest seed",
                   "study_accuracy": "per study (95 % CI)", "study_kappa": "study kappa (95 % CI)"}
VARIANT_FORMATS = {"train_accuracy": percent,
                   "final_train_loss": lambda v: "–" if v is None else f"{v:.3f}",
                   "seconds_per_step": lambda v: "–" if v is None else f"{v:.2f}",
                   "value": lambda v: f"{v:g}"}
COMPARISON_COLUMNS = {"name": "against the reference", "difference": "difference (95 % CI)",
                      "per_seed": "per seed pair", "discordant": "only A / only B right",
                      "p_value": "paired test p", "detectable": "detectable",
                      "verdict": "established?"}


def variant_rows(rows: list[dict]) -> list[dict]:
    """Variant rows with their valid metrics as 'value (low to high)' text and the range of
    valid accuracy per image over the seeds."""
    out = []
    for r in rows:
        seeds = [v for v in r.get("image_accuracy_seeds") or [] if v is not None]
        shown = with_intervals(r, keys=("image_accuracy", "study_accuracy", "study_kappa"))
        shown["image_accuracy_range"] = seed_range(seeds) if len(seeds) > 1 else "–"
        out.append(shown)
    return out


def comparison_rows(comparisons: list[dict], reference: str) -> list[dict]:
    """One display row per comparison: difference with interval, discordant images, McNemar's
    p, and whether the difference is established (and for which side)."""
    out = []
    for c in comparisons:
        if c.get("diverged"):
            out.append({"name": c["name"], "difference": "diverged", "discordant": "–",
                        "p_value": "–", "verdict": "–"})
            continue
        scale, unit = (1, "") if c["metric"] == "study_kappa" else (100, " pt")
        verdict = {"a": f"yes, {c['name']} better", "b": f"yes, {reference} better"}.get(
            c["verdict"], "no")
        seeds = [s["difference"] for s in c.get("per_seed") or [] if s.get("difference") is not None]
        out.append({"name": c["name"],
                    "difference": f"{scale * c['difference']:+.1f}{unit} ({scale * c['low']:+.1f} "
                                  f"to {scale * c['high']:+.1f})",
                    "per_seed": " / ".join(f"{scale * d:+.1f}" for d in seeds) or "–",
                    "discordant": f"{c['a_only']} / {c['b_only']}",
                    "p_value": p_value(c["p_value"]).removeprefix("p = "),
                    "detectable": "–" if c.get("detectable") is None
                    else f"{scale * c['detectable']:.1f}{unit}",
                    "verdict": verdict})
    return out


#: knob -> (name of its figure and results entry, section title)
SWEEP_SECTIONS = {"batch_size": ("batch_size", "Mini-batch size"),
                  "lr": ("learning_rate", "Learning rate"),
                  "momentum": ("momentum", "Momentum")}


def sweep_report(knob: str, summary: dict, centre) -> dict:
    """Name, title, rows, column headers, comparisons, caption and discussion of one sweep
    (``experiments.sweep_summary``), JSON-ready."""
    label = SWEEP_KNOBS[knob]
    rows = summary["rows"]
    examples = rows[0]["examples"] if rows else 0
    values = ", ".join(f"{r['value']:g}" for r in rows)
    seeds = rows[0]["seeds"] if rows else 1
    name, title = SWEEP_SECTIONS[knob]
    reference = sweep_label(knob, centre)
    return {
        "knob": knob, "name": name, "title": title, "centre": centre,
        "rows": rows,
        "display_rows": variant_rows(rows),
        "columns": {"value": label, "steps": "steps", **VARIANT_COLUMNS},
        "comparisons": summary["comparisons"],
        "comparison_rows": comparison_rows(summary["comparisons"], reference),
        "caption": (f"{label.capitalize()} at {values}, every run seeing {examples:,} training "
                    "examples" + (f", {seeds} seeds each (mean, and a band from the lowest to "
                                  "the highest seed)" if seeds > 1 else "")
                    + ": smoothed training loss (left) and accuracy per image on train "
                    "(dashed) and valid (solid) against the epoch (right)"),
        "discussion": sweep_discussion(label, rows, summary["comparisons"], reference),
    }


# --------------------------------------------------------------------------- explanations

#: The MURA paper's study kappa per body part on its hidden test set (Rajpurkar et al.,
#: arXiv:1712.06957, as quoted in docs/mura.md): the best of three radiologists, and the model (an
#: ensemble of ImageNet-pretrained DenseNet-169s) with its interval as published.
MURA_PAPER_KAPPA = {
    "elbow": {"radiologist": 0.850, "model": 0.710, "low": 0.674, "high": 0.745},
    "finger": {"radiologist": 0.410, "model": 0.389, "low": 0.332, "high": 0.446},
    "forearm": {"radiologist": 0.802, "model": 0.737, "low": 0.707, "high": 0.766},
    "hand": {"radiologist": 0.927, "model": 0.851, "low": 0.830, "high": 0.871},
    "humerus": {"radiologist": 0.933, "model": 0.600, "low": 0.558, "high": 0.642},
    "shoulder": {"radiologist": 0.864, "model": 0.729, "low": 0.697, "high": 0.760},
    "wrist": {"radiologist": 0.931, "model": 0.931, "low": 0.922, "high": 0.940},
    "overall": {"radiologist": 0.778, "model": 0.705, "low": 0.700, "high": 0.710},
}
PAPER_KAPPA_COLUMNS = {"body_part": "body part", "studies": "valid studies",
                       "ours": "our study kappa (95 % CI)",
                       "paper_model": "MURA model, test (95 % CI as published)",
                       "radiologist": "best radiologist, test"}


def paper_kappa_rows(kappas: list[dict]) -> list[dict]:
    """Our study kappa per body part (``evaluation.body_part_kappas``) beside the MURA paper's
    model and best radiologist, as display strings; the row "all" becomes "overall"."""
    rows = []
    for k in kappas:
        name = "overall" if k["body_part"] == "all" else body_part_name(k["body_part"])
        paper = MURA_PAPER_KAPPA.get(name, {})
        rows.append({"body_part": name, "studies": k["studies"],
                     "ours": interval(k.get("value"), k.get("low"), k.get("high"), "float"),
                     "paper_model": interval(paper.get("model"), paper.get("low"),
                                             paper.get("high"), "float"),
                     "radiologist": number(paper.get("radiologist"))})
    return rows


LOCALIZATION_COLUMNS = {"map": "map", "sign": "sign", "images": "images",
                        "zero_maps": "all-zero maps", "share": "map mass on the sign",
                        "uniform_share": "uniform map (sign area)", "ratio": "ratio (95 % CI)",
                        "peak_inside": "peak on the sign"}


def localization_rows(result: dict) -> list[dict]:
    """``saliency.sign_localization``'s Grad-CAM rows, then its input-gradient rows, as
    display strings."""
    out = []
    for name, rows in (("Grad-CAM", result["rows"]),
                       ("input gradient", result.get("input_gradient") or [])):
        for r in rows:
            ratio = "–" if r["ratio"] is None else (
                f"{r['ratio']:.2f} ({r['ratio_low']:.2f} to {r['ratio_high']:.2f})")
            out.append({"map": name, "sign": "all signs" if r["sign"] == "all" else f"{r['sign']}s",
                        "images": r["images"], "zero_maps": r["zero_maps"],
                        "share": percent(r["share"]), "uniform_share": percent(r["uniform_share"]),
                        "ratio": ratio, "peak_inside": percent(r["peak_inside"])})
    return out
