"""Markdown tables and captions (nbconvert renders them as real tables in HTML and, through
pandoc, in LaTeX), and the rows the notebooks show."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import metrics
from ..data.mura import body_part_name
from ..formatting import number, percent


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
    body = [[_escape_cell(formats.get(k, number)(row.get(k))) for k in headers]
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



def metric_rows(tables: dict) -> list[dict]:
    """Rows ``{"metric", "train", "valid"}`` (formatted strings) of ``evaluate_splits``."""
    return [{"metric": label, **{split: metrics.format_metric(metrics.metric_value(t, key), kind,
                                                              missing="–")
                                 for split, t in tables.items()}}
            for label, key, kind in metrics.METRIC_ROWS]


def body_part_rows(table: dict) -> list[dict]:
    """One row per body part of a metric table (counts and accuracies)."""
    return [{"body_part": body_part_name(part), **{
        k: t.get(k) for k in ("n_images", "image_accuracy", "patient_accuracy",
                              "study_accuracy", "study_kappa")}}
            for part, t in sorted(table["per_body_part"].items())]


SWEEP_FORMATS = {"train_accuracy": percent, "valid_accuracy": percent,
                 "final_train_loss": lambda v: "–" if v is None else f"{v:.3f}",
                 "seconds_per_step": lambda v: "–" if v is None else f"{v:.2f}",
                 "value": lambda v: f"{v:g}"}


#: knob -> (name of its figure and results entry, section title)
SWEEP_SECTIONS = {"batch_size": ("batch_size", "Mini-batch size"),
                  "lr": ("learning_rate", "Learning rate"),
                  "momentum": ("momentum", "Momentum")}


def sweep_report(knob: str, runs: dict) -> dict:
    """Name, title, rows, column headers, caption and discussion of one sweep (JSON-ready)."""
    from ..experiments import SWEEP_KNOBS, sweep_table  # noqa: PLC0415
    from .prose import sweep_discussion  # noqa: PLC0415

    label = SWEEP_KNOBS[knob]
    rows = sweep_table(knob, runs)
    examples = rows[0]["examples"] if rows else 0
    values = ", ".join(f"{r['value']:g}" for r in rows)
    name, title = SWEEP_SECTIONS[knob]
    return {
        "knob": knob,
        "name": name,
        "title": title,
        "rows": rows,
        "columns": {"value": label, "steps": "steps", "examples": "examples",
                    "final_train_loss": "final loss", "train_accuracy": "train acc.",
                    "valid_accuracy": "valid acc.", "seconds_per_step": "s / step",
                    "diverged": "diverged"},
        "caption": (f"{label.capitalize()} at {values}, "
                    f"every run seeing {examples:,} training examples: smoothed training loss "
                    "per step (left) and accuracy per image on train (dashed) and valid "
                    "(solid) against the epoch (right)"),
        "discussion": sweep_discussion(label, rows),
    }
