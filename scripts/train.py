"""Train an MLP on a scikit-learn toy dataset: the same as ``fastbp train``."""

import sys

from fastbp._entry import main

if __name__ == "__main__":
    sys.argv[1:1] = ["train"]
    main()
