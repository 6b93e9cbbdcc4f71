"""``python -m fastbp ...``: the same as the ``fastbp`` command."""

from ._entry import main

main()
