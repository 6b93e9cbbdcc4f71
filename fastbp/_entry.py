"""The ``fastbp`` command's entry point, light on imports.

Loading numpy, scikit-learn and Numba takes about a second; a Ctrl-C then would
print Python's traceback from inside an import.  So the handler below answers it
with one line and status 130 until :mod:`fastbp.cli` (which handles Ctrl-C itself,
at every later moment) is loaded.
"""

import gc
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
    # The imports make some 100,000 objects that live as long as the process, and the collector's full
    # passes meanwhile walk all of them, again and again: 0.1-0.2 s of a second `fastbp train` (1.5 s) went
    # there.  So nothing is collected while they load, and gc.freeze then moves what they made out of the
    # collector's sight: later passes walk only what the command itself allocates.
    gc.disable()
    try:
        from .cli import run
    finally:
        gc.freeze()
        gc.enable()
    signal.signal(signal.SIGINT, previous)
    run()
