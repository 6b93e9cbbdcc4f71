"""Run fastbp's benchmark: ``python scripts/bench.py [--quick] [--out DIR]``.

Writes DIR/bench.md (markdown tables) and DIR/bench.png and prints the tables;
see :mod:`fastbp.benchmark`.  If OPENBLAS_CORETYPE or OPENBLAS_L2_SIZE are set
in your shell, unset them for this command (``env -u OPENBLAS_CORETYPE ...``):
the header reports them, the benchmark leaves them alone.
"""

import argparse
import sys

from fastbp.benchmark import main


def parse(argv):
    parser = argparse.ArgumentParser(description="fastbp benchmark: kernels, training, BLAS limit, compile cost")
    parser.add_argument("--quick", action="store_true", help="fewer rows and epochs (a few minutes on 2 cores)")
    parser.add_argument("--out", default="bench-results", help="folder for bench.md and bench.png")
    parser.add_argument("--threads", type=int, default=None, help="BLAS (and torch) threads for every peer")
    return parser.parse_args(argv)


if __name__ == "__main__":
    argv = sys.argv[1:]
    parse(argv)  # --help and argument errors here; main parses the same arguments
    sys.exit(main(argv))
