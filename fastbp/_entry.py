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


# Whether main turned the garbage collector off, for collect_again to turn it on.
_held = False


def collect_again() -> None:
    """The command's imports are loaded: collect garbage again if :func:`main` stopped it (else nothing).

    What the imports made is frozen first (gc.freeze), out of the collector's sight: later passes walk
    only what the command itself allocates.  Called before the command's real work, so that a long
    compile never runs without collection.
    """
    global _held
    if _held:
        _held = False
        gc.freeze()
        gc.enable()


def main() -> None:
    """``fastbp ...``: :func:`fastbp.cli.run` once it is loaded."""
    global _held
    previous = signal.signal(signal.SIGINT, _interrupted_while_starting)
    # numpy, Numba and scikit-learn make some 100,000 objects that live as long as the process, and the
    # collector's full passes meanwhile walk all of them, again and again: 0.1-0.2 s of a second
    # `fastbp train` (1.5 s) went there.  So nothing is collected until the command has loaded what it
    # needs (fastbp.cli calls collect_again), none of which is garbage.
    _held = gc.isenabled()
    gc.disable()
    try:
        from .cli import run
    except BaseException:
        collect_again()
        raise
    signal.signal(signal.SIGINT, previous)
    run()
