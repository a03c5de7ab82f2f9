"""What a notebook needs besides its own knobs: paths, data, and how to show results.

Every notebook starts with ``ctx = open_notebook(NAME, **parameters)``; ``ctx.figure``,
``ctx.table`` and ``ctx.markdown`` display results with numbered captions (saying "synthetic
data" when it is), ``ctx.save_results`` writes the notebook's numbers for the report.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .. import profiles as profiles_mod
from ..files import write_json
from .tables import caption, markdown_table
from .workspace import DataSource, Paths, PipelineError, build_cache, prepare_data


@dataclass
class NotebookContext:
    """What a notebook needs besides its own knobs: paths, data, and how to show results.

    ``figure`` saves a figure as ``FIGURES/NAME_STEM.png`` and ``.pdf`` and displays the PNG
    with a numbered caption (which says "synthetic data" when it is); ``table`` displays a
    Markdown table with its caption; ``save_results`` writes ``OUT/results/NAME.json``.
    """

    name: str
    profile: str
    backend: str
    seed: int
    settings: dict
    source: DataSource
    paths: Paths
    _figures: int = 0
    _tables: int = 0
    _cache: object = None

    @property
    def synthetic(self) -> bool:
        return self.source.synthetic

    @property
    def number(self) -> str:
        return self.name.split("_", 1)[0].lstrip("0") or "0"

    @property
    def input_size(self) -> int:
        return int(self.settings.get("input_size",
                                     profiles_mod.get_profile(self.profile).input_size))

    @property
    def cache(self):
        """The preprocessing cache at this notebook's input size (built when missing)."""
        if self._cache is None:
            self._cache = build_cache(self.source, self.input_size, self.paths,
                                      log=lambda *a, **k: None)
        return self._cache

    def label(self, text: str) -> str:
        """``text`` with "(synthetic data)" appended when the data is synthetic."""
        return f"{text} (synthetic data)" if self.synthetic else text

    def figure(self, fig, stem: str, caption_text: str, from_data: bool = True):
        """Save ``fig`` (PNG + PDF) under the figures folder, display it with its caption,
        and close it. Returns the PNG path. ``from_data=False`` for a figure that does not
        come from the data set (its caption then does not say "synthetic data")."""
        from IPython.display import Image, Markdown, display  # noqa: PLC0415

        from ..plots import save_figure  # noqa: PLC0415

        self._figures += 1
        written = save_figure(fig, self.paths.figures / f"{self.name}_{stem}")
        png = next(p for p in written if Path(p).suffix == ".png")
        _close(fig)
        display(Image(filename=str(png)))
        display(Markdown(caption(caption_text, f"Figure {self.number}.{self._figures}",
                                            synthetic=self.synthetic and from_data)))
        return Path(png)

    def table(self, rows: list[dict], columns=None, caption_text: str | None = None,
              formats: dict | None = None, align: dict | None = None,
              from_data: bool = True) -> str:
        """Display ``rows`` as a Markdown table, with a numbered caption above it
        (``from_data`` as for ``figure``)."""
        from IPython.display import Markdown, display  # noqa: PLC0415

        text = markdown_table(rows, columns, formats=formats, align=align)
        if caption_text:
            self._tables += 1
            text = caption(caption_text, f"Table {self.number}.{self._tables}",
                                      synthetic=self.synthetic and from_data) + "\n\n" + text
        display(Markdown(text))
        return text

    def markdown(self, text: str) -> None:
        from IPython.display import Markdown, display  # noqa: PLC0415

        display(Markdown(text))

    def results_path(self, name: str | None = None) -> Path:
        return self.paths.results / f"{name or self.name}.json"

    def save_results(self, results: dict) -> Path:
        """Write this notebook's numbers (plus its settings and data source) as JSON."""
        payload = {"notebook": self.name, "profile": self.profile, "backend": self.backend,
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
    import matplotlib.pyplot as plt  # noqa: PLC0415

    if plt.fignum_exists(getattr(fig, "number", -1)):
        plt.close(fig)


def open_notebook(name: str, *, data_dir=None, profile: str = profiles_mod.DEFAULT_PROFILE,
                  backend: str = "numpy", seed: int = 0, out_dir=None, figures_dir=None,
                  work_dir=None, **knobs) -> NotebookContext:
    """The context of notebook ``name`` from its parameters.

    Knobs left at None take the profile's values; paths left at None take the defaults of
    ``make report``. Without ``data_dir`` the synthetic set of (profile, seed) is used,
    generated first when it does not exist yet (the pipeline has normally done it).
    """
    from ..nn.backend import resolve_backend, seed_all  # noqa: PLC0415

    settings = profiles_mod.notebook_settings(name, profile, **knobs)
    paths = Paths.make(out_dir, figures_dir, work_dir)
    backend = resolve_backend(backend)
    seed_all(seed)
    source = prepare_data(data_dir, profile, seed, paths, log=lambda *a, **k: None)
    return NotebookContext(name=name, profile=profile, backend=backend, seed=int(seed),
                           settings=settings, source=source, paths=paths)
