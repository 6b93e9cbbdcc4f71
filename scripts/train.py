"""Train an MLP on a scikit-learn toy dataset: the same as ``fastbp train``."""

import sys

from fastbp.cli import run

if __name__ == "__main__":
    sys.argv[1:1] = ["train"]
    run()
