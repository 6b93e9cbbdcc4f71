"""``python -m fastbp warmup`` end to end: it compiles (or loads) every float32 kernel and says how long it took.

In a file of its own, which sorts last, so that it runs after the rest of the suite has filled the
cache it shares with it: from an empty cache the command compiles for more than two minutes, while
what it compiles is tested in tests/test_cli_moments.py (``test_warmup_compiles_only_what_it_is_asked``).
"""

import subprocess
import sys

from test_cli_moments import ENV, REPO


def test_warmup_command():
    result = subprocess.run([sys.executable, "-m", "fastbp", "warmup", "--dtype", "float32"], cwd=REPO, env=ENV,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("fastbp's kernels for float32 and relu ready in "), result.stdout
    assert "functions compiled" in result.stdout
