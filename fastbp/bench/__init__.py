"""fastbp's benchmark harness, behind ``fastbp bench`` and ``scripts/bench.py``; ``import fastbp`` never loads it.

Modules, one job each: :mod:`.protocol` (alternating rounds, medians, thread
counts), :mod:`.peers` and :mod:`.frameworks` (the problems and everything
trained on them), :mod:`.cases` (the measurements), :mod:`.compile_time`
(fresh processes, empty and filled Numba caches), :mod:`.targets` (what
fastbp promises), :mod:`.report` (markdown and plot), :mod:`.run` (the
command line).  It uses fastbp only through its public API.
"""

from .run import build_parser, main

__all__ = ["build_parser", "main"]
