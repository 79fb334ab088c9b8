"""sensitivity.py: per-layer scan, the proposal of per-layer ratios, and training with what it proposes."""
import csv
import importlib.util
import json
import os

import pytest

from sparsity import rules
from suite.analysis.sensitivity import (
    Point,
    parse_granularity,
    propose,
    weighted_sparsity,
)
from tests.scripts import QUICK, check, run, tree_snapshot


def curve(name, size, drops, ratios=(0.25, 0.5, 0.75)):
    return [Point(name, name, size, r, 0.9 - d, d) for r, d in zip(ratios, drops)]


def test_proposal_prunes_large_insensitive_layers_most_and_hits_the_target_exactly():
    points = curve("big", 9000, [0.0, 0.001, 0.002]) + curve("small", 1000, [0.01, 0.08, 0.3])
    ratios = propose(points, 0.6, max_drop=0.05)
    assert weighted_sparsity(ratios, {"big": 9000, "small": 1000}) == pytest.approx(0.6)
    assert ratios["big"] > 0.6 > ratios["small"]


def test_proposal_uses_a_monotone_drop_and_respects_max_drop():
    # 'noisy' looks free at 0.75 (drop -0.01) but cost 0.2 at 0.5: the worst drop so far counts
    points = curve("noisy", 1000, [0.0, 0.2, -0.01]) + curve("steady", 1000, [0.01, 0.02, 0.03])
    ratios = propose(points, 0.5, max_drop=0.1)
    assert ratios["noisy"] <= 0.25 and ratios["steady"] >= 0.75
    with pytest.raises(ValueError, match="cannot be reached within --max_drop 0.05: at most 0.5000"):
        propose(points, 0.7, max_drop=0.05)


def test_granularity_tokens():
    assert parse_granularity(["block", "2", "1"]) == rules.Block(2, 1)
    assert parse_granularity(["channel"]) is None  # whole channel groups: no rule of a single tensor
    with pytest.raises(ValueError, match="channel takes at most 0 number"):
        parse_granularity(["channel", "1"])
    assert parse_granularity(["element"]) == rules.Element()
    with pytest.raises(ValueError, match="takes at most 2 number"):
        parse_granularity(["block", "2", "1", "3"])
    with pytest.raises(ValueError, match="is not one of"):
        parse_granularity(["filters"])


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    path = tmp_path_factory.mktemp("dense") / "run"
    check(run("train.py", *QUICK, "--pruning_strategy", "none", "--num_epochs", "2", "--model_path", path))
    return path


def test_scan_writes_csv_png_and_a_config_that_training_reaches(dense, tmp_path):
    out = tmp_path / "sens"
    result = check(run("sensitivity.py", "--pretrained_model", dense, "--output", out, "--ratios", "0.3", "0.6", "0.9",
                       "--val_subset", "300", "--target_sparsity", "0.7", "--max_drop", "0.2"))
    assert "parameter 5/5" in result.stdout and "ETA" in result.stdout and "dense top-1" in result.stdout
    rows = list(csv.DictReader(open(out / "sensitivity.csv")))
    assert len(rows) == 1 + 5 * 3 and rows[0]["parameter"] == "(dense)"
    assert {r["layer"] for r in rows[1:]} == {"features.0.weight", "features.4.weight", "head.0.weight", "head.2.weight", "classifier.weight"}
    for r in rows[1:]:
        assert float(r["drop"]) == pytest.approx(float(rows[0]["top1"]) - float(r["top1"]), abs=1e-5)
    if importlib.util.find_spec("matplotlib"):
        assert (out / "sensitivity.png").stat().st_size > 10_000
    proposed = json.load(open(out / "sparsity_config.json"))
    sizes = {r["layer"]: int(r["size"]) for r in rows[1:]}
    assert weighted_sparsity(proposed, sizes) == pytest.approx(0.7, abs=1e-3)

    trained = check(run("train.py", *QUICK, "--pretrained_model", dense, "--pruning_strategy", "gmp", "--ratio", "0.7",
                        "--pruning_epochs", "1", "--tunning_epochs", "1", "--pruning_steps", "5", "--num_epochs", "2",
                        "--sparsity_config", out / "sparsity_config.json", "--model_path", tmp_path / "run"))
    assert "per-layer targets from --sparsity_config" in trained.stdout
    state = json.load(open(tmp_path / "run" / "latest" / "state.json"))
    assert state["history"][-1]["pruned_sparsity"] == pytest.approx(0.7, abs=2e-3)
    report = tmp_path / "eval.json"
    check(run("evaluate.py", "--pruned_model", tmp_path / "run", "--test_subset", "200", "--json", report))
    for layer in json.load(open(report))["layers"]:
        if layer["pruned"]:
            assert layer["target"] == pytest.approx(proposed[layer["layer"]])
            assert layer["sparsity"] == pytest.approx(proposed[layer["layer"]], abs=1 / layer["size"] + 1e-6)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--granularity", "nm", "4", "4"], "1 <= n < m"),
        (["--granularity", "tiles"], "is not one of"),
        (["--ratios", "0.5", "0.2"], "must be ascending"),
        (["--target_sparsity", "0.99", "--max_drop", "0.0"], "cannot be reached"),
        (["--val_subset", "100000"], "held-out set of 100000 samples"),
        (["--val_subset", "0"], "argument --val_subset: expected an integer >= 1, got '0'"),
        (["--scale", "0"], "argument --scale: expected a number > 0, got '0'"),
        ([], "already exists and is not empty"),
    ],
    ids=["nm", "unknown", "order", "unreachable", "val", "val-zero", "scale-zero", "output-exists"],
)
def test_bad_input_is_one_error_and_nothing_written(dense, tmp_path, args, message):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("earlier results")
    output = tmp_path / ("out" if not args else "new")
    before = tree_snapshot(tmp_path)
    result = run("sensitivity.py", "--pretrained_model", dense, "--output", output, "--ratios", "0.5", "0.9", "--val_subset", "100", *args)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert tree_snapshot(tmp_path) == before and not [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]
