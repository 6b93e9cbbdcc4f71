"""The ``fastbp`` command's entry point, light on imports.

Loading numpy, scikit-learn and Numba takes about a second; a Ctrl-C then would
print Python's traceback from inside an import.  So the handler below answers it
with one line and status 130 until :mod:`fastbp.cli` (which handles Ctrl-C itself,
at every later moment) is loaded.
"""

import os
import signal
import sys


def _interrupted_while_starting(signum, frame):
    sys.stderr.write("fastbp: interrupted while starting; nothing done\n")
    sys.stderr.flush()
    os._exit(130)


def main() -> None:
    """``fastbp ...``: :func:`fastbp.cli.run` once it is loaded."""
    previous = signal.signal(signal.SIGINT, _interrupted_while_starting)
    from .cli import run

    signal.signal(signal.SIGINT, previous)
    run()
