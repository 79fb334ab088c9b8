"""export.py and evaluate.py on what users ship: Paddle inference model, ONNX, compressed sparse file, state dict."""
import importlib.util
import json
import os

import numpy as np
import paddle
import pytest

import export as export_cli
from sparsity import UnstructuredPruner, static
from suite import data
from suite.artefacts import checkpoint, sparse_file, weights
from suite.deploy import runtimes
from suite.errors import run_cli
from suite.training import program
from suite.training.program import load_test_graph
from tests import scripts
from tests.scripts import GMP, QUICK, check, run, saved_arrays, tree_snapshot

HAS_ONNX = importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("paddle2onnx") is not None
needs_onnx = pytest.mark.skipif(not HAS_ONNX, reason="paddle2onnx and onnxruntime are not installed in this environment")
RUN_90 = [*QUICK, *GMP, "--ratio", "0.9", "--num_epochs", "3"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A LeNet trained with GMP to 90%, exported in every format this environment can write."""
    root = tmp_path_factory.mktemp("export")
    check(run("train.py", *RUN_90, "--model_path", root / "run"))
    formats = ["paddle", "sparse", "state_dict"] + (["onnx"] if HAS_ONNX else [])
    result = check(run("export.py", "--pruned_model", root / "run", "--output", root / "out", "--format", *formats))
    return root, result.stdout


def checkpoint_weights(root):
    """{structural name: array} of the trained checkpoint, and its state."""
    state = checkpoint.verify(root / "run" / "latest")
    arrays = saved_arrays(root / "run" / "latest")
    return {key: arrays[var] for key, var in state["structure"].items()}, state


def test_export_prints_sizes_and_checks(exported):
    root, stdout = exported
    manifest = json.load(open(root / "out" / "export.json"))
    for name, size in manifest["files"].items():
        assert os.path.getsize(root / "out" / name) == size
    assert "model.sparse.npz" in stdout and "x dense" in stdout and "check paddle: max |difference|" in stdout
    assert "exported and checked state_dict" in stdout and stdout.count(", ETA ") == len(manifest["checks"])
    assert manifest["checks"]["sparse"] == manifest["checks"]["state_dict"] == "bit-identical round trip"
    assert not [n for n in os.listdir(root) if n.startswith(".tmp-export")]


def test_inference_model_holds_the_trained_weights_and_no_masks_or_optimizer_state(exported):
    root, _ = exported
    held = runtimes.inference_weights(str(root / "out"), paddle.CPUPlace())
    trained, state = checkpoint_weights(root)
    assert not [n for n in held if static.is_mask_name(n) or "velocity" in n or "learning_rate" in n]
    assert sorted(held) == sorted(state["structure"].values())
    for key, var in state["structure"].items():
        assert held[var].tobytes() == trained[key].tobytes(), key  # zeros included, bit for bit


def test_runtimes_give_the_test_programs_outputs(exported):
    """Paddle Inference (and ONNX Runtime) on real test images against the static test program."""
    root, _ = exported
    source = weights.read(str(root / "run"))
    graph, exe, scope = load_test_graph(source, source.spec, paddle.CPUPlace())
    images, _ = next(data.batches(data.load_dataset("fashion_mnist", "test", None, 28, 64), 64, False))
    expected = exe.run(graph.test, feed={"image": images}, fetch_list=[graph.logits])[0]
    got = runtimes.paddle_inference(str(root / "out"), paddle.CPUPlace())(images)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    if HAS_ONNX:
        onnx_out = runtimes.onnx_runtime(str(root / "out" / "model.onnx"), paddle.CPUPlace())(images)
        np.testing.assert_allclose(onnx_out, expected, rtol=1e-5, atol=1e-5)
        held = runtimes.onnx_weights(str(root / "out" / "model.onnx"))
        trained, state = checkpoint_weights(root)
        for key, var in state["structure"].items():
            np.testing.assert_array_equal(held[var], trained[key], err_msg=key)
    paddle.disable_static()


def test_sparse_file_and_state_dict_restore_the_exact_weights(exported):
    root, _ = exported
    trained, _ = checkpoint_weights(root)
    restored, metadata = sparse_file.read(str(root / "out" / "model.sparse.npz"))
    state_dict = weights.read_state_dict(str(root / "out" / "model.pdparams"))
    for copy in (restored, state_dict):
        assert copy.keys() == trained.keys()
        for key in trained:
            assert copy[key].dtype == trained[key].dtype and copy[key].tobytes() == trained[key].tobytes(), key
    assert metadata["spec"]["model"] == "lenet" and len(metadata["targets"]) == 5
    # the state dict loads into the dygraph model as a zoo file would
    import models

    net = models.create("LeNet", num_classes=10, in_channels=1, image_size=28)
    missing, unexpected = net.set_state_dict(paddle.load(str(root / "out" / "model.pdparams")))
    assert not missing and not unexpected


def test_evaluate_agrees_on_every_artefact(exported, tmp_path):
    root, _ = exported
    targets = ["run", "out", "out/model.sparse.npz", "out/model.pdparams"] + (["out/model.onnx"] if HAS_ONNX else [])
    reports = {}
    for target in targets:
        out = tmp_path / (target.replace("/", "_") + ".json")
        check(run("evaluate.py", "--pruned_model", root / target, "--test_subset", "1000", "--json", out))
        reports[target] = json.load(open(out))
    first = reports["run"]
    assert first["pruned_sparsity"] == pytest.approx(0.9, abs=1e-4)
    for target, rep in reports.items():
        assert rep["samples"] == 1000
        assert (rep["top1"], rep["top5"]) == (first["top1"], first["top5"]), target
        assert rep["pruned_sparsity"] == pytest.approx(first["pruned_sparsity"], abs=1e-12), target
        assert rep["model_sparsity"] == pytest.approx(first["model_sparsity"], abs=1e-12), target
    assert {r["kind"] for r in reports.values()} >= {"checkpoint", "paddle_inference", "sparse", "state_dict"}


def test_sparse_file_is_at_most_015_of_dense_at_90_percent(static_mode, tmp_path):
    """MobileNetV1 x0.25 (28x28 grey) pruned to 90% of its prunable weights by the pruner."""
    _, _, scope = static_mode
    graph = program.build_test("MobileNet", 0.25, 28, 1, 10)
    exe = paddle.static.Executor(paddle.CPUPlace())
    exe.run(graph.startup)
    pruner = UnstructuredPruner(graph.test, "ratio", ratio=0.9, scope=scope, startup_program=graph.startup)
    pruner.step()
    tensors = {key: static.read(scope, var) for key, var in graph.structure.items()}
    size = sparse_file.write(str(tmp_path / "m.sparse.npz"), tensors)
    dense = sum(a.nbytes for a in tensors.values())
    assert pruner.sparsity()["pruned"] == pytest.approx(0.9, abs=1e-4)
    assert size / dense <= 0.15, f"{size} bytes is {size / dense:.3f}x of {dense} dense bytes"


def test_corrupt_sparse_file_is_refused(exported, tmp_path, capsys):
    root, _ = exported
    bad = tmp_path / "bad.sparse.npz"
    raw = bytearray(open(root / "out" / "model.sparse.npz", "rb").read())
    raw[len(raw) // 2] ^= 0xFF
    bad.write_bytes(bytes(raw))
    result = run("evaluate.py", "--pruned_model", bad)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(bad) in errors[0]


@pytest.fixture
def export_inputs(exported, tmp_path):
    root, _ = exported
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("an earlier export")
    paddle.save({"fc.weight": np.zeros((2, 2), "float32")}, str(tmp_path / "other.pdparams"))
    return {"run": root / "run", "full": tmp_path / "full", "new": tmp_path / "new", "other": tmp_path / "other.pdparams", "missing": tmp_path / "missing"}


BAD_EXPORTS = [
    (["--pruned_model", "{run}", "--output", "{full}"], "already exists and is not empty"),
    (["--pruned_model", "{run}", "--output", "{new}", "--format", "tflite"], "--format tflite is not a format"),
    (["--pruned_model", "{missing}", "--output", "{new}"], "is not a weights source"),
    (["--pruned_model", "{other}", "--output", "{new}"], "pass --model (and --scale) and --data"),
    (["--pruned_model", "{other}", "--output", "{new}", "--model", "LeNet", "--data", "fashion_mnist"], "does not match this model"),
    (["--pruned_model", "{run}", "--output", "{new}", "--model", "MLP"], "does not match this model"),
    (["--pruned_model", "{run}", "--output", "{new}", "--image_size", "5"], "lenet x1.0 at 5x5 pixels with 10 classes cannot be built"),
]


@pytest.mark.parametrize("args,message", BAD_EXPORTS, ids=[str(i) for i in range(len(BAD_EXPORTS))])
def test_bad_export_input_is_refused_and_nothing_written(export_inputs, args, message, capsys):
    args = [str(a).format(**{k: str(v) for k, v in export_inputs.items()}) for a in args]
    before = tree_snapshot(export_inputs["full"])
    try:
        assert run_cli(export_cli.main, args) == 2
    finally:
        paddle.disable_static()
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], errors
    assert tree_snapshot(export_inputs["full"]) == before
    assert not os.path.exists(export_inputs["new"])


NOT_SIZES = [  # each once replaced by a default (`value or default`) or passed on to fail somewhere deep
    ("evaluate", "--num_classes", "-1", "an integer >= 1"),
    ("evaluate", "--num_classes", "0", "an integer >= 1"),
    ("evaluate", "--scale", "0", "a number > 0"),
    ("evaluate", "--image_size", "0", "an integer >= 1"),
    ("evaluate", "--num_workers", "-1", "an integer >= 0"),
    ("evaluate", "--test_subset", "0", "an integer >= 1"),
    ("export", "--num_classes", "-1", "an integer >= 1"),
    ("export", "--scale", "nan", "a number > 0"),
    ("export", "--image_size", "0", "an integer >= 1"),
]


@pytest.mark.parametrize("script,flag,value,expected", NOT_SIZES, ids=[f"{s}{f}={v}" for s, f, v, _ in NOT_SIZES])
def test_sizes_that_are_not_sizes_are_refused_by_the_parser(capsys, script, flag, value, expected):
    import evaluate as evaluate_cli

    cli, required = {"evaluate": (evaluate_cli, []), "export": (export_cli, ["--output", "out"])}[script]
    with pytest.raises(SystemExit) as stop:
        cli.parse_args(["--pruned_model", "run", *required, flag, value])
    assert stop.value.code == 2
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 1 and errors[0].startswith(f"error: argument {flag}: expected {expected}, got '{value}'"), errors


def test_flags_an_exported_model_has_built_in_are_refused(exported, capsys):
    import evaluate as evaluate_cli

    root, _ = exported
    for flags in (["--num_classes", "10"], ["--image_size", "32", "--scale", "0.5"]):
        try:
            assert run_cli(evaluate_cli.main, ["--pruned_model", str(root / "out"), *flags]) == 2
        finally:
            paddle.disable_static()
        errors = capsys.readouterr().err.splitlines()
        assert len(errors) == 1 and f"cannot apply to {root / 'out'}, an exported model" in errors[0] and flags[0] in errors[0]


@needs_onnx
def test_input_size_onnx_cannot_take_fails_the_export_check_in_one_line(export_inputs, capsys):
    """LeNet at 12x12 runs in Paddle, but its converted pooling has a zero stride that ONNX Runtime refuses."""
    try:
        status = run_cli(export_cli.main, ["--pruned_model", str(export_inputs["run"]), "--output", str(export_inputs["new"]),
                                           "--format", "onnx", "--image_size", "12"])
    finally:
        paddle.disable_static()
    errors = capsys.readouterr().err.splitlines()
    assert status == 4 and len(errors) == 1, errors
    assert f"{export_inputs['new']}/model.onnx: ONNX Runtime cannot load it" in errors[0] and "the export failed its check" in errors[0]
    assert not os.path.exists(export_inputs["new"])


def test_missing_onnx_packages_named_without_a_traceback(export_inputs, monkeypatch, capsys):
    scripts.block_imports(monkeypatch, lambda name, _: name if name.split(".")[0] in ("onnxruntime", "paddle2onnx") else None)
    try:
        status = run_cli(export_cli.main, ["--pruned_model", str(export_inputs["run"]), "--output", str(export_inputs["new"]), "--format", "onnx"])
    finally:
        paddle.disable_static()
    err = capsys.readouterr().err
    assert status == 2 and "pip install paddle2onnx" in err and "Traceback" not in err
    assert not os.path.exists(export_inputs["new"])
    assert export_cli.export.default_formats() == ["paddle", "sparse"]
    # without --format, the export goes on without ONNX and says why
    try:
        status = run_cli(export_cli.main, ["--pruned_model", str(export_inputs["run"]), "--output", str(export_inputs["new"])])
    finally:
        paddle.disable_static()
    out = capsys.readouterr().out
    assert status == 0 and "note: not exporting ONNX" in out and "pip install paddle2onnx" in out
    assert os.path.exists(os.path.join(export_inputs["new"], "model.sparse.npz"))
    assert not os.path.exists(os.path.join(export_inputs["new"], "model.onnx"))


@needs_onnx
def test_failed_onnx_conversion_leaves_nothing(export_inputs, monkeypatch, capsys, tmp_path):
    from suite.deploy import export

    crash = tmp_path / "crashing_python"  # stands in for the interpreter that runs paddle2onnx
    crash.write_text("#!/bin/sh\necho 'Segmentation fault in the converter' >&2\nexit 139\n")
    crash.chmod(0o755)
    monkeypatch.setattr(export.sys, "executable", str(crash))
    try:
        status = run_cli(export_cli.main, ["--pruned_model", str(export_inputs["run"]), "--output", str(export_inputs["new"])])
    finally:
        paddle.disable_static()
    err = capsys.readouterr().err
    assert status == 4 and "paddle2onnx could not convert the model (Segmentation fault in the converter)" in err
    parent = os.path.dirname(export_inputs["new"])
    assert not os.path.exists(export_inputs["new"]) and not [n for n in os.listdir(parent) if n.startswith(".tmp-export")]


def test_checkpoint_masks_cost_a_bit_per_weight(exported):
    """A sparse run's checkpoint stores its masks packed: 1/32 of float32 masks (plus zip overhead)."""
    root, _ = exported
    folder = checkpoint.resolve(str(root / "run"))
    masks = checkpoint.unpack_masks(os.path.join(folder, checkpoint.MASKS))
    float_bytes = sum(m.nbytes for m in masks.values())
    assert masks and os.path.getsize(os.path.join(folder, checkpoint.MASKS)) < float_bytes / 20
    arrays = saved_arrays(folder)
    for name, mask in masks.items():
        assert set(np.unique(mask)) <= {0.0, 1.0}
        weight = arrays[name[: -len(static.mask_name(""))]]
        assert np.all(weight[mask == 0] == 0)
