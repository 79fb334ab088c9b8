"""The README's pruner example runs as written and prints what it says."""
import os
import re
import subprocess
import sys

from tests.scripts import ROOT


def test_readme_pruner_example_runs():
    text = open(os.path.join(ROOT, "README.md")).read()
    (code,) = [block for block in re.findall(r"```python\n(.*?)```", text, re.S) if "GMPUnstructuredPruner" in block]
    result = subprocess.run([sys.executable, "-c", "import suite\n" + code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert float(lines[0]) == 0.75
    assert 0.7 < float(lines[1]) < 0.75
    assert len(eval(lines[2])) == 2  # noqa: S307 - our own printed dict
