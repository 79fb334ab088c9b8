"""train.py and evaluate.py end to end, as a user runs them."""
import importlib.util
import json
import os

import numpy as np
import pytest

from tests.scripts import GMP, QUICK, check, run, saved_arrays

MASK = "_mask"


@pytest.fixture(scope="module")
def gmp_run(tmp_path_factory):
    """3 epochs (150 steps) of LeNet with GMP to 75%: ramp over epochs 0-1, tuning in epoch 2."""
    path = tmp_path_factory.mktemp("gmp")
    result = check(run("train.py", *QUICK, *GMP, "--num_epochs", "3", "--model_path", path / "out", "--log_dir", path / "vdl"))
    return path, result


def test_gmp_run_reaches_target_sparsity_and_learns(gmp_run):
    path, result = gmp_run
    state = json.load(open(path / "out" / "latest" / "state.json"))
    final = state["history"][-1]
    assert final["pruned_sparsity"] == pytest.approx(0.75, abs=1e-4)
    assert 0.5 < final["model_sparsity"] < 0.75  # biases and BN stay dense
    assert final["top1"] > 0.6  # chance is 0.1
    ramp = [row["pruned_sparsity"] for row in state["history"]]
    assert ramp[0] < ramp[1] <= ramp[2]
    assert "warning: every weight of" not in result.stdout  # no layer is emptied at 75%
    # the weights in the file are sparse: masked entries are exactly zero
    arrays = saved_arrays(path / "out" / "latest")
    masked = list(state["targets"])  # every parameter has a mask, as in PaddleSlim; these are applied
    assert len(masked) == 5 and all(n + MASK in arrays for n in masked)  # 2 convs + 3 fc weights
    for name in masked:
        assert np.all(arrays[name][arrays[name + MASK] == 0] == 0)
    # progress lines and artefacts a user looks at
    assert "images/s" in result.stdout and "test epoch 2" in result.stdout and "final: top1" in result.stdout
    progress = [line for line in result.stdout.splitlines() if " batch " in line and "images/s" in line]
    assert len(progress) == 6 and all(" ETA " in line for line in progress) and progress[-1].endswith("ETA 0s")
    # the curve behind curves.png: a point per progress line, showing the GMP ramp step by step
    curve = state["curve"]
    assert [p["step"] for p in curve] == list(range(25, 151, 25))
    ramp = [p["sparsity"] for p in curve]
    assert ramp == sorted(ramp) and ramp[0] < 0.5 and ramp[-1] == pytest.approx(0.75, abs=1e-4)
    if importlib.util.find_spec("matplotlib"):
        assert os.path.isfile(path / "out" / "curves.png")
    if importlib.util.find_spec("visualdl"):
        assert os.listdir(path / "vdl")


def test_a_layer_pruned_away_is_named(tmp_path):
    """A threshold above every |w| empties every pruned layer: the run says which, and how to avoid it."""
    result = check(run("train.py", *QUICK, "--train_subset", "640", "--pruning_strategy", "base", "--pruning_mode", "threshold",
                       "--threshold", "1000", "--num_epochs", "1", "--model_path", tmp_path / "out"))
    warning = next(line for line in result.stdout.splitlines() if "warning: every weight of" in line)
    state = json.load(open(tmp_path / "out" / "latest" / "state.json"))
    assert state["history"][-1]["pruned_sparsity"] == 1.0
    assert "--local_sparsity True" in warning and all(name in warning for name in state["pruner"]["targets"])


def test_evaluate_reports_what_training_saw(gmp_run, tmp_path):
    path, _ = gmp_run
    state = json.load(open(path / "out" / "latest" / "state.json"))
    out = tmp_path / "eval.json"
    result = check(run("evaluate.py", "--pruned_model", path / "out", "--test_subset", "1000", "--json", out))
    report = json.load(open(out))
    final = state["history"][-1]
    assert report["top1"] == pytest.approx(final["top1"], abs=1e-9)
    assert report["top5"] == pytest.approx(final["top5"], abs=1e-9)
    assert report["pruned_sparsity"] == pytest.approx(final["pruned_sparsity"], abs=1e-9)
    assert report["model_sparsity"] == pytest.approx(final["model_sparsity"], abs=1e-9)
    pruned = [r for r in report["layers"] if r["pruned"]]
    assert len(pruned) == 5 and all(len(r["shape"]) >= 2 for r in pruned)
    assert all(r["sparsity"] == 0 for r in report["layers"] if not r["pruned"])
    assert "pruned set 0.7500" in result.stdout and "linear_0.w_0" in result.stdout
    # progress on stderr, so the report on stdout stays clean for `> eval.txt`
    assert [line.split(",")[0] for line in result.stderr.splitlines() if "ETA" in line] == [f"evaluated {i}/4 batches" for i in range(1, 5)]


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="matplotlib is not installed here")
def test_evaluate_plots(gmp_run, tmp_path):
    path, _ = gmp_run
    result = check(run("evaluate.py", "--pruned_model", path / "out", "--test_subset", "200", "--plots", tmp_path / "plots"))
    for name in ("layer_sparsity.png", "weight_histograms.png"):
        png = tmp_path / "plots" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
        assert str(png) in result.stdout


def test_evaluate_refuses_another_model(gmp_run):
    path, _ = gmp_run
    result = run("evaluate.py", "--pruned_model", path / "out", "--model", "MobileNet", "--scale", "0.25")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "does not match this model" in errors[0] and "check --model" in errors[0]


def test_resume_mid_ramp_equals_uninterrupted_run(gmp_run, tmp_path):
    """Epochs 0-2 straight vs. epoch 0, stop, resume from its checkpoint, epochs 1-2: identical state."""
    path, _ = gmp_run
    straight = path / "out"
    check(run("train.py", *QUICK, *GMP, "--num_epochs", "3", "--checkpoint", straight / "epoch_0", "--last_epoch", "0", "--model_path", tmp_path))
    a, b = saved_arrays(straight / "epoch_2"), saved_arrays(tmp_path / "epoch_2")
    assert a.keys() == b.keys() and any("velocity" in k for k in a) and any(k.endswith(MASK) for k in a)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    sa, sb = (json.load(open(p / "epoch_2" / "state.json")) for p in (straight, tmp_path))
    assert sa["pruner"] == sb["pruner"] and sa["lr"] == sb["lr"]
    assert [r["top1"] for r in sa["history"]] == [r["top1"] for r in sb["history"]]


def test_eta_is_the_pace_so_far_times_what_is_left(monkeypatch):
    from suite.training import log

    clock = iter([100.0, 130.0, 100.0, 7300.0])
    monkeypatch.setattr(log.time, "perf_counter", lambda: next(clock))
    assert log.Eta(10).update(3) == "ETA 1m10s"  # 30 s for 3 units, 7 left
    assert log.Eta(400, already=100).update(200) == "ETA 4h00m"  # a resumed run: its own pace, 200 left
    assert log.duration(59.4) == "59s" and log.duration(3599) == "59m59s"
