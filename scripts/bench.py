"""fastbp's benchmark, the same as ``fastbp bench``: ``python scripts/bench.py [--quick] [--out DIR]``."""
import sys

from fastbp.bench import main

if __name__ == "__main__":
    sys.exit(main())
