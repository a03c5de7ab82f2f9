"""The report: the notebooks executed by papermill, merged into one document with no code.

    workspace.py   where a run reads and writes (Paths), the data it uses, the cache
    pipeline.py    run_report: data, cache, notebooks, provenance, document
    context.py     open_notebook / NotebookContext: what a notebook needs
    tables.py      Markdown tables, captions, and the rows the notebooks show
    prose.py       the generated sentences: summaries and discussions
    provenance.py  where the numbers come from
    document.py    the report notebook and its HTML / PDF export (nbformat, nbconvert)

Importing this package (as every notebook does) loads no part of the Jupyter stack; papermill,
nbformat and nbconvert are imported only where the report is built.
"""
from .context import NotebookContext, open_notebook
from .workspace import PipelineError

__all__ = ["NotebookContext", "PipelineError", "open_notebook"]
