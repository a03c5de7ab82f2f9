"""What a notebook needs besides its own knobs: paths, data, and how to show results.

Every notebook starts with ``ctx = open_notebook(NAME, globals())`` after its parameters
cell; ``ctx.figure``,
``ctx.table`` and ``ctx.markdown`` display results with numbered captions (saying "synthetic
data" when it is), ``ctx.save_results`` writes the notebook's numbers for the report.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..evaluation.stats import Grouping
from ..experiments import comparisons
from ..experiments import profiles as profiles_mod
from ..experiments.executors import make_executor
from ..experiments.profiles import Profile
from ..experiments.store import RunSpec, run_folder
from ..files import write_json
from .live import RunWatch, unfinished
from .tables import (
    COMPARISON_COLUMNS,
    HTML_ONLY,
    VARIANT_FORMATS,
    caption,
    latex_figure,
    sweep_report,
    table_block,
)
from .workspace import DataSource, Paths, PipelineError, build_cache, prepare_data


@dataclass
class NotebookContext:
    """What a notebook needs besides its own knobs: paths, data, and how to show results.

    ``figure`` saves a figure as ``FIGURES/NAME_STEM.png`` and ``.pdf`` and displays the PNG
    with a numbered caption (which says "synthetic data" when it is); ``table`` displays a
    table with its caption; ``save_results`` writes ``OUT/results/NAME.json``. For training:
    ``run_spec`` (the notebook's settings as an ``experiments.RunSpec``), ``seeds``,
    ``executor`` (who trains: this process, or a Dask cluster) and ``grouping`` (who is who in
    a split, for the statistics).
    """

    name: str
    profile: Profile
    backend: str
    seed: int
    settings: dict
    source: DataSource
    paths: Paths
    scheduler: str | None = None
    _figures: int = 0
    _tables: int = 0
    _cache: object = None
    _executor: object = None

    @property
    def synthetic(self) -> bool:
        return self.source.synthetic

    @property
    def number(self) -> str:
        return self.name.split("_", 1)[0].lstrip("0") or "0"

    @property
    def input_size(self) -> int:
        return int(self.settings.get("input_size", self.profile.input_size))

    @property
    def cache(self):
        """The preprocessing cache at this notebook's input size (built when missing)."""
        if self._cache is None:
            self._cache = build_cache(self.source, self.input_size, self.paths,
                                      log=lambda *a, **k: None)
        return self._cache

    @property
    def seeds(self) -> list[int]:
        """The seeds of this notebook's variants: the run seed first, then the next ones."""
        return [self.seed + i for i in range(int(self.settings.get("seeds", 1)))]

    @property
    def executor(self):
        """Who trains this notebook's runs (``executors.make_executor`` of ``scheduler``)."""
        if self._executor is None:
            self._executor = make_executor(self.scheduler, backend=self.backend)
        return self._executor

    def run_spec(self, arch: str | None = None, **changes):
        """The notebook's training settings as a ``store.RunSpec`` (seed: the run seed;
        architecture: ``arch``, the ``arch`` knob, or the baseline). A profile that trains
        ``epochs`` gets the steps of that many whole passes over this cache's train split, and
        ``evals_per_epoch`` an evaluation every that fraction of an epoch."""
        c = self.settings
        per_epoch = len(self.cache.split("train").labels) // c["batch_size"]
        steps = c.get("steps") or c["epochs"] * per_epoch
        eval_every = c["eval_every"]
        if c.get("evals_per_epoch"):
            eval_every = max(1, per_epoch // c["evals_per_epoch"])
        spec = RunSpec(arch=arch or c.get("arch", "baseline"), seed=self.seed, steps=steps,
                       batch_size=c["batch_size"], lr=c["lr"], momentum=c["momentum"],
                       weight_decay=c["weight_decay"], eval_every=eval_every,
                       train_eval_size=c["eval_images"], warmup_steps=c["warmup_steps"],
                       schedule=c["schedule"], augment=bool(c.get("augment", False)))
        return spec.replace(**changes)

    def train(self, specs) -> list:
        """The runs of ``specs`` (``comparisons.run_all`` by this notebook's executor), in
        order; in JupyterLab the runs still to train are watched as they train (a progress
        bar each and their loss curves, ``live.RunWatch``). Stopped (the kernel interrupted),
        every run keeps its checkpoint and the same call resumes it."""
        specs = list(specs)
        with self._watch(specs):
            return comparisons.run_all(specs, self.cache, self.paths.runs, backend=self.backend,
                                       executor=self.executor)

    def train_variants(self, variants: dict) -> dict:
        """``comparisons.train_variants`` of ``variants`` (name -> spec) from this notebook's
        seeds, watched as ``train`` does: name -> its runs, in seed order."""
        specs = [s for name, spec in variants.items()
                 for s in comparisons.seeded(spec.replace(label=name), self.seeds)]
        with self._watch(specs):
            return comparisons.train_variants(variants, self.seeds, self.cache, self.paths.runs,
                                              backend=self.backend, executor=self.executor)

    def _watch(self, specs) -> RunWatch:
        folders, steps = {}, {}
        for spec in specs:
            folder = run_folder(spec.replace(label=""), self.cache, self.paths.runs, self.backend)
            if folder not in folders.values() and unfinished(folder, spec.steps):
                label = f"{spec.label or spec.arch} (seed {spec.seed})"
                folders[label], steps[label] = folder, spec.steps
        return RunWatch(folders, steps, title=self.label("Training loss, as it trains"))

    def grouping(self, split: str = "valid"):
        """``stats.Grouping`` of a cached split: labels, patients, studies."""
        part = self.cache.split(split)
        return Grouping.of(part.labels, part.patient_ids, part.study_ids, part.body_parts)

    def label(self, text: str) -> str:
        """``text`` with "(synthetic data)" appended when the data is synthetic."""
        return f"{text} (synthetic data)" if self.synthetic else text

    def figure(self, fig, stem: str, caption_text: str, from_data: bool = True):
        """Save ``fig`` (PNG + PDF) under the figures folder, display it with its caption,
        and close it. Returns the PNG path. ``from_data=False`` for a figure that does not
        come from the data set (its caption then does not say "synthetic data").

        Two outputs: the PNG (for JupyterLab and the HTML report), then the caption in
        Markdown with, as its LaTeX form, the figure's PDF and caption in one float (for the
        PDF report, which leaves the PNG out)."""
        from IPython.display import Image, display

        from ..plots import save_figure

        self._figures += 1
        written = [Path(p) for p in save_figure(fig, self.paths.figures / f"{self.name}_{stem}")]
        png = next(p for p in written if p.suffix == ".png")
        vector = next((p for p in written if p.suffix == ".pdf"), png)
        _close(fig)
        text = caption(caption_text, f"Figure {self.number}.{self._figures}",
                       synthetic=self.synthetic and from_data)
        display(Image(filename=str(png)), metadata={"report": HTML_ONLY})
        display({"text/markdown": text, "text/latex": latex_figure(vector, text)}, raw=True)
        return png

    def table(self, rows: list[dict], columns=None, caption_text: str | None = None,
              formats: dict | None = None, align: dict | None = None,
              from_data: bool = True) -> str:
        """Display ``rows`` as a table with a numbered caption above it (``from_data`` as for
        ``figure``), in Markdown and, for the PDF, as a LaTeX float. Returns the Markdown."""
        from IPython.display import display

        text = None
        if caption_text:
            self._tables += 1
            text = caption(caption_text, f"Table {self.number}.{self._tables}",
                           synthetic=self.synthetic and from_data)
        block = table_block(rows, columns, text, formats=formats, align=align)
        display(block, raw=True)
        return block["text/markdown"]

    def training_length(self, spec=None) -> str:
        """'250 steps' or '3 epochs (3,450 steps)': how long this notebook's runs train."""
        spec = spec or self.run_spec()
        if self.settings.get("epochs"):
            return f"{self.settings['epochs']} epochs ({spec.steps:,} steps)"
        return f"{spec.steps:,} steps"

    def show_sweep(self, knob: str, summary: dict) -> dict:
        """One sweep of notebook 05 (``comparisons.sweep_summaries``): its heading, figure,
        tables and discussion; returns its ``tables.sweep_report`` (JSON-ready)."""
        from ..plots import plot_runs

        sweep = sweep_report(knob, summary, summary["centre"])
        self.markdown(f"## {sweep['title']}")
        self.figure(plot_runs(summary["histories"], metric="image_accuracy", x="epoch",
                              title=self.label(sweep["title"])), sweep["name"], sweep["caption"])
        self.table(sweep["display_rows"], sweep["columns"],
                   self.label(f"{sweep['title']}: final numbers"), formats=VARIANT_FORMATS)
        self.table(sweep["comparison_rows"], COMPARISON_COLUMNS,
                   self.label(f"{sweep['title']}: each value against the centre value"))
        self.markdown(sweep["discussion"])
        return sweep

    def markdown(self, text: str) -> None:
        from IPython.display import Markdown, display

        display(Markdown(text))

    def results_path(self, name: str | None = None) -> Path:
        return self.paths.results / f"{name or self.name}.json"

    def save_results(self, results: dict) -> Path:
        """Write this notebook's numbers (plus its settings and data source) as JSON."""
        payload = {"notebook": self.name, "profile": self.profile.name, "backend": self.backend,
                   "seed": self.seed, "data_source": self.source.label,
                   "synthetic": self.synthetic, "settings": self.settings, **results}
        return write_json(self.results_path(), payload)

    def load_results(self, name: str) -> dict:
        """The results JSON of an earlier notebook; a clear error when it has not run."""
        path = self.results_path(name)
        if not path.exists():
            raise PipelineError(f"{path} is missing: run notebook {name}.ipynb first "
                                "(or the whole pipeline: python -m mura_core report)")
        return json.loads(path.read_text())


def _close(fig) -> None:
    import matplotlib.pyplot as plt

    if plt.fignum_exists(getattr(fig, "number", -1)):
        plt.close(fig)


#: The parameters every notebook takes besides its knobs, with their defaults.
COMMON_PARAMETERS = {"data_dir": None, "profile": profiles_mod.DEFAULT_PROFILE,
                     "backend": "numpy", "seed": 0, "out_dir": None, "figures_dir": None,
                     "work_dir": None, "scheduler": None}


def open_notebook(name: str, parameters=None, **given) -> NotebookContext:
    """The context of notebook ``name`` from its parameters: ``parameters`` a mapping that
    holds them, such as the notebook's own ``globals()`` after its parameters cell (only
    ``COMMON_PARAMETERS`` and the notebook's knobs are read from it, anything else is
    ignored), and/or the same as keyword arguments, which win.

    Knobs left at None take the profile's values; paths left at None take the defaults of
    ``make report``. Without ``data_dir`` the synthetic set of (profile, seed) is used,
    generated first when it does not exist yet (the pipeline has normally done it).
    ``scheduler``: None for the default executor; see ``executors.make_executor``.
    """
    from ..nn.backend import resolve_backend, seed_all

    values = dict(parameters or {})
    values.update(given)
    common = {key: values.get(key, default) for key, default in COMMON_PARAMETERS.items()}
    prof = profiles_mod.get_profile(common["profile"])
    own = prof.notebook_knobs(name)
    unknown = sorted(k for k in given if k not in own and k not in COMMON_PARAMETERS)
    if unknown:
        raise TypeError(f"notebook {name!r} has no knob(s) {', '.join(unknown)}")
    knobs = {key: values[key] for key in own if key in values}
    settings = profiles_mod.notebook_settings(name, prof, **knobs)
    paths = Paths.make(common["out_dir"], common["figures_dir"], common["work_dir"])
    seed = int(common["seed"])
    seed_all(seed)
    source = prepare_data(common["data_dir"], prof, seed, paths, log=lambda *a, **k: None)
    return NotebookContext(name=name, profile=prof, backend=resolve_backend(common["backend"]),
                           seed=seed, settings=settings, source=source, paths=paths,
                           scheduler=common["scheduler"])
