"""The explorer of notebook 07: any valid image, or a file of one's own, through trained
networks, with what each predicts and where it looks.

For one image and each model: the image as the network sees it (the cached, preprocessed
``size`` x ``size`` picture), P(normal) against the label of its study, the Grad-CAM map of the
abnormal score at the last convolution and the input gradient |ds/dx| (``evaluation.saliency``),
and the other images of the study with each model's P(normal) and the study's verdict (the
mean P(normal) of its images, as ``metrics.study_probabilities`` scores a study).

Everything the widgets show is computed by the plain functions here (``Catalog``,
``explain``, ``explanation_figure``, ``study_figure``), which the tests call directly; the
``Explorer`` only wires them to ipywidgets in a live kernel. Under papermill there is no widget
frontend: the notebook shows the same figures for one normal and one abnormal image instead.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.mura import body_part_name
from ..evaluation import saliency
from ..evaluation.metrics import THRESHOLD
from ..evaluation.predictions import load_images, split_inputs
from ..plots import png_bytes

#: The maps shown beside each image, in order.
MAPS = ("Grad-CAM", "input gradient")


def label_name(label) -> str:
    """"normal" (1), "abnormal" (0), or "no label" (None: a file of one's own)."""
    if label is None:
        return "no label"
    return "normal" if int(label) == 1 else "abnormal"


@dataclass(frozen=True)
class Explanation:
    """One image through one model: P(normal) and the maps of ``MAPS``, (H, W) in [0, 1]."""

    p_normal: float
    maps: dict

    @property
    def verdict(self) -> str:
        return "normal" if self.p_normal >= THRESHOLD else "abnormal"


def explain(model, x) -> list[Explanation]:
    """The explanations of a batch x (N, 1, S, S), standardized as in training."""
    probs = model.predict_proba(x)
    cams = saliency.grad_cam(model, x)
    gradients = saliency.display_scale(saliency.input_gradient(model, x))
    return [Explanation(float(p), {"Grad-CAM": cam, "input gradient": grad})
            for p, cam, grad in zip(probs, cams, gradients)]


def study_verdict(explained: list[Explanation]) -> str:
    """'normal (mean P(normal) 0.71)': the mean P(normal) of a study's images against 0.5."""
    mean = float(np.mean([e.p_normal for e in explained]))
    return f"{'normal' if mean >= THRESHOLD else 'abnormal'} (mean P(normal) {mean:.2f})"


class Catalog:
    """The images of a cached split by body part and study: what the explorer offers."""

    def __init__(self, split):
        self.split = split
        self._rows: dict[str, list[int]] = {}  # study key -> its rows, in the split's order
        self._studies: dict[str, list[str]] = {}  # body part -> its study keys
        for row, record in enumerate(split.records):
            if record.study_key not in self._rows:
                self._studies.setdefault(record.body_part, []).append(record.study_key)
            self._rows.setdefault(record.study_key, []).append(row)

    @property
    def body_parts(self) -> list[str]:
        return sorted(self._studies)

    def studies(self, body_part: str) -> list[str]:
        """The study keys of a body part, sorted."""
        return sorted(self._studies[body_part])

    def rows(self, study: str) -> list[int]:
        """The rows of a study's images, in the order of the split."""
        try:
            return self._rows[study]
        except KeyError:
            raise KeyError(f"no study {study!r} in the {self.split.name} split") from None

    def study_of(self, row: int) -> str:
        return self.split.records[row].study_key

    def label(self, row: int) -> int:
        return int(self.split.labels[row])

    def study_title(self, study: str) -> str:
        """'patient11185 study1, abnormal, 3 images'."""
        rows = self.rows(study)
        record = self.split.records[rows[0]]
        count = f"{len(rows)} image{'s' if len(rows) != 1 else ''}"
        return f"{record.patient} {record.study}, {label_name(self.label(rows[0]))}, {count}"

    def image_title(self, row: int) -> str:
        """'image 2 of 3: image2.png'."""
        rows = self.rows(self.study_of(row))
        name = Path(self.split.records[row].path).name
        return f"image {rows.index(row) + 1} of {len(rows)}: {name}"


def explain_rows(models: dict, split, rows, mean: float, std: float) -> dict[str, list[Explanation]]:
    """Model name -> the explanations of the rows ``rows`` of a cached split."""
    x = split_inputs(split, rows, mean, std)
    return {name: explain(model, x) for name, model in models.items()}


def explain_file(models: dict, path) -> tuple[np.ndarray, dict[str, Explanation]]:
    """An image file, preprocessed as each model was trained (``predictions.load_images``):
    (the image as the first model sees it, (S, S) uint8; model name -> its explanation).
    Raises ValueError with a one-line message for a file that is not a readable image."""
    image, explained = None, {}
    for name, model in models.items():
        [(_, error)], images, x = load_images(model, [path])
        if error is not None:
            raise ValueError(f"{error}; give a PNG or JPEG radiograph")
        image = images[0] if image is None else image
        explained[name] = explain(model, x)[0]
    return image, explained


def explain_upload(models: dict, name: str, content: bytes):
    """``explain_file`` of the bytes of an uploaded file, ``name`` its file name (which an
    error message names)."""
    with tempfile.TemporaryDirectory(prefix="mura-upload-") as folder:
        path = Path(folder) / f"upload{Path(name).suffix or '.png'}"
        path.write_bytes(bytes(content))
        try:
            return explain_file(models, path)
        except ValueError as exc:
            raise ValueError(str(exc).replace(str(path), name)) from None


def explanation_figure(image, explained: dict[str, Explanation], label, title: str):
    """One row per model: the image as the network sees it, then each map of ``MAPS`` over
    it; each row says the model's P(normal), its verdict and the label."""
    from ..plots import overlay_grid

    rows = [(f"{name}: P(normal) {e.p_normal:.2f}, {e.verdict} (label: {label_name(label)})",
             [e.maps[m] for m in MAPS]) for name, e in explained.items()]
    return overlay_grid(image, rows, ["network input", *MAPS], title=title)


def study_figure(images, explained: dict[str, list[Explanation]], label, shown: int | None = None):
    """The images of a study, each with every model's P(normal) (the one shown above,
    ``shown``, marked with ">"), and the study's verdict per model over them."""
    from ..plots import image_grid

    titles = [f"{'> ' if i == shown else ''}image {i + 1}, P(normal)\n"
              + "\n".join(f"{n} {e[i].p_normal:.2f}" for n, e in explained.items())
              for i in range(len(images))]
    verdicts = "\n".join(f"{n}: {study_verdict(e)}" for n, e in explained.items())
    return image_grid(images, titles, ncols=min(4, len(images)), cell=2.0, title_size=9,
                      title=f"The study ({label_name(label)}), its verdict per model:\n{verdicts}")


class Explorer:
    """The widgets: pick a body part, a study and one of its images (or upload a file), and
    one model or two to compare; the figures of ``explanation_figure`` and ``study_figure``
    follow every change. ``widget`` builds them, ``show`` displays them in a live frontend."""

    def __init__(self, models: dict, split, mean: float, std: float):
        if not models:
            raise ValueError("the explorer needs at least one trained model")
        self.models, self.split, self.mean, self.std = dict(models), split, mean, std
        self.catalog = Catalog(split)
        self.controls: dict = {}

    def examples(self, seed: int = 0) -> list[int]:
        """A normal and an abnormal row of the split (``pick_samples``), normal first."""
        from ..data.samples import pick_samples

        return [int(r) for r in pick_samples(self.split, 1, seed)]

    def row_figures(self, row: int, models: dict | None = None):
        """(``explanation_figure``, ``study_figure``) of the row ``row`` of the split through
        ``models`` (default: every model): what the widgets show for it."""
        models = self.models if models is None else models
        study = self.catalog.study_of(row)
        rows = self.catalog.rows(study)
        explained = explain_rows(models, self.split, rows, self.mean, self.std)
        shown, label = rows.index(row), self.catalog.label(row)
        images = np.asarray(self.split.images)[rows]
        title = (f"{body_part_name(self.split.body_parts[row])}, "
                 f"{self.catalog.study_title(study)}; {self.catalog.image_title(row)}")
        return (explanation_figure(images[shown], {n: e[shown] for n, e in explained.items()},
                                   label, title),
                study_figure(images, explained, label, shown))

    def show(self, start: int | None = None) -> bool:
        """Display the widgets in a live frontend and return True; elsewhere (papermill)
        display nothing and return False. ``start``: the row shown first (default: the
        abnormal one of ``examples``)."""
        from ..progress import live_frontend

        if not live_frontend():
            return False
        from IPython.display import display

        display(self.widget(self.examples()[1] if start is None else start))
        return True

    def selected(self) -> dict:
        """The models chosen in the controls, in order: one, or two to compare."""
        first, second = self.controls["model"].value, self.controls["compare"].value
        names = [first] + ([second] if second not in (None, first) else [])
        return {name: self.models[name] for name in names}

    def widget(self, start: int = 0):
        """The explorer's widgets (an ipywidgets VBox), showing the row ``start`` first."""
        import ipywidgets as w

        names, wide = list(self.models), w.Layout(width="440px")
        body = w.Dropdown(description="body part",
                          options=[(body_part_name(b), b) for b in self.catalog.body_parts])
        study, image = w.Dropdown(description="study", layout=wide), w.Dropdown(description="image",
                                                                               layout=wide)
        model = w.Dropdown(description="model", options=names, value=names[0])
        compare = w.Dropdown(description="compare with", value=names[1] if len(names) > 1 else None,
                             options=[("none", None)] + [(n, n) for n in names])
        upload = w.FileUpload(accept="image/*", multiple=False, description="your image")
        status = w.HTML()
        picture, study_picture = (w.Image(format="png", layout=w.Layout(max_width="900px"))
                                  for _ in range(2))
        picture.add_class("mura-gradcam")
        study_picture.add_class("mura-study")
        self.controls = dict(body=body, study=study, image=image, model=model, compare=compare,
                             upload=upload, status=status, picture=picture,
                             study_picture=study_picture)
        quiet = {"now": True}  # no redraw while options are refilled, nor before the first

        def refill(dropdown, options) -> None:  # and choose the first option
            before, quiet["now"] = quiet["now"], True
            dropdown.options = options
            dropdown.value = options[0][1]
            quiet["now"] = before

        def fill_studies(change=None) -> None:
            refill(study, [(self.catalog.study_title(s), s)
                           for s in self.catalog.studies(body.value)])
            fill_images()

        def fill_images(change=None) -> None:
            if change is not None and quiet["now"]:
                return
            refill(image, [(self.catalog.image_title(r), r) for r in self.catalog.rows(study.value)])
            redraw()

        def redraw(change=None) -> None:
            if image.value is not None and not quiet["now"]:
                self.show_row(image.value)

        def read_upload(change) -> None:
            if upload.value:
                self.show_upload(upload.value[0]["name"], upload.value[0]["content"])

        row = start if 0 <= start < len(self.split.labels) else 0
        body.value = self.split.records[row].body_part
        fill_studies()
        study.value = self.catalog.study_of(row)
        fill_images()
        image.value = row
        for control, action in ((body, fill_studies), (study, fill_images), (image, redraw),
                                (model, redraw), (compare, redraw), (upload, read_upload)):
            control.observe(action, names="value")
        quiet["now"] = False
        self.show_row(row)
        return w.VBox([w.HBox([body, model, compare]), w.HBox([study, upload]), image, status,
                       picture, study_picture])

    def show_row(self, row: int) -> None:
        """Show the row ``row`` of the split and its study in the widgets."""
        figure, study = self.row_figures(row, self.selected())
        c = self.controls
        c["picture"].value, c["study_picture"].value = png_bytes(figure), png_bytes(study)
        c["status"].value = ""

    def show_upload(self, name: str, content: bytes) -> None:
        """Show an uploaded file (no label, no study) in the widgets, or its one-line error."""
        c = self.controls
        try:
            image, explained = explain_upload(self.selected(), name, content)
        except ValueError as exc:
            c["status"].value = f"<b>{exc}</b>"
            return
        c["picture"].value = png_bytes(explanation_figure(image, explained, None,
                                                          f"your image: {name}"))
        c["study_picture"].value = b""
        c["status"].value = f"{name}: preprocessed as in training, no label"
