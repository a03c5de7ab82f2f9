"""Organising many runs: the profiles (how much each notebook trains), the idea of a run
(``store``: a spec, its result, its folder), who trains runs (``executors``: this process, or
a Dask cluster in ``cluster``), and the comparisons of variants trained from several seeds."""
