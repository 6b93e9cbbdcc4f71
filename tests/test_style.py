"""Checks that keep the code in one shape: Numba's options from one place, every import declared.

In the spirit of stumpy's ``test.sh``: a kernel compiled with its own ``njit``
flags would silently leave out the project's fastmath set (or bring back the
``nnan`` / ``ninf`` flags that delete finiteness checks), and an undeclared
import works here only because something else installed it.
"""

import ast
import pathlib
import re
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "fastbp"
SOURCES = sorted(PACKAGE.rglob("*.py"))

# import name -> distribution name, where they differ
DISTRIBUTIONS = {"sklearn": "scikit-learn", "distributed": "dask", "onnxruntime": "onnxruntime"}
# benchmark peers imported only when present; README says how to install them (torch needs its CPU build)
OPTIONAL_PEERS = {"torch", "jax"}


def _imports(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module.split(".")[0]


def test_only_config_compiles_with_numba_directly():
    offenders = []
    for path in SOURCES:
        if path.name == "_config.py":
            continue
        text = path.read_text()
        if re.search(r"\bnjit\b|numba\.jit\b|from numba import .*\bjit\b|fastmath\s*=", text):
            offenders.append(path.name)
    assert offenders == [], f"{offenders} compile with Numba directly: use fastbp._config's jit helpers"


def test_every_third_party_import_is_declared():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + [d for extra in project["optional-dependencies"].values() for d in extra]
    names = {re.split(r"[\[<>=!~ ]", d, maxsplit=1)[0].lower() for d in declared}
    used = {name for path in SOURCES for name in _imports(path)}
    third_party = used - set(sys.stdlib_module_names) - {"fastbp"} - OPTIONAL_PEERS
    missing = sorted(n for n in third_party if DISTRIBUTIONS.get(n, n).lower() not in names)
    assert missing == [], f"imported but not declared in pyproject.toml: {missing}"
