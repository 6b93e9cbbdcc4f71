"""``python -m fastbp ...``: the same as the ``fastbp`` command."""

from .cli import run

run()
