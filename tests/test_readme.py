"""The pruner API section's examples run as written and print what their comments say."""
import ast
import os
import re
import subprocess
import sys

import pytest

from tests.scripts import ROOT


def examples():
    """The python blocks of README.md's "The pruner API" section (up to the next top-level section)."""
    text = open(os.path.join(ROOT, "README.md")).read()
    section = text.split("\n## The pruner API\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.DOTALL)


def run_example(code):
    result = subprocess.run([sys.executable, "-c", "import suite\n" + code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()


def test_every_example_is_checked():
    assert len(examples()) == 5


@pytest.mark.parametrize("index", range(5))
def test_example_prints_what_it_says(index):
    code = examples()[index]
    lines = run_example(code)
    if index == 0:  # static GMP
        assert float(lines[0]) == 0.75 and float(lines[1]) == 0.75
        assert 0.7 < float(lines[2]) < 0.75
        assert len(ast.literal_eval(lines[3])) == 2
    elif index == 1:  # channel rule
        assert ast.literal_eval(lines[0]) == [0.0, 1.0] and float(lines[1]) == 0.5
    elif index == 2:  # channel groups
        assert lines[0] == "True"
        kept, channels = ast.literal_eval(lines[1])
        assert channels == 512 and kept % 8 == 0 and 0 < kept <= channels
    elif index == 3:  # per-layer config file
        assert ast.literal_eval(lines[0]) == {"linear_0.w_0": 0.9, "linear_2.w_0": 0.5}
        layers = ast.literal_eval(lines[1])
        assert layers["linear_0.w_0"] == pytest.approx(0.9, abs=1 / 4096) and layers["linear_2.w_0"] == pytest.approx(0.5, abs=1 / 640)
    else:  # dygraph with Model.fit
        assert lines[0] == "0.8 0.8"
        assert ast.literal_eval(lines[1]) == ["1.weight_mask", "3.weight_mask"]
