"""Train an MLP on a scikit-learn toy dataset: the same as ``fastbp train``."""

import sys

from fastbp.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
