"""The suite's environment: no background compiles (fastbp._background) started by its fits.

They would take a core for seconds after tests that are already done, and compile code the
suite compiles anyway; the test of that module starts one on purpose, in a process of its own.
"""

import os

from fastbp._background import SWITCH

os.environ[SWITCH] = "0"
