"""INT8 export (suite/deploy/quantize.py): ONNX Runtime's static quantization of a small trained sparse model,
checked against the float model, keeping every zero, evaluated like any other artefact."""
import json
import os

import numpy as np
import pytest

import export as export_cli
from suite.artefacts import checkpoint
from suite.deploy import quantize
from suite.errors import run_cli
from tests import scripts
from tests.scripts import GMP, QUICK, check, run

try:
    quantize.require_quantization()
    import paddle2onnx  # noqa: F401

    MISSING = None
except Exception as exc:  # noqa: BLE001 - any reason the tools cannot run here is the reason to skip
    MISSING = str(exc)
pytestmark = pytest.mark.skipif(MISSING is not None, reason=f"ONNX Runtime's quantization tools or paddle2onnx are absent: {MISSING}")

INT8_FORMATS = ["onnx", "onnx_int8", "onnx_int8_deepsparse", "sparse_int8"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A LeNet trained with GMP to 75%, exported as float ONNX and every INT8 format."""
    root = tmp_path_factory.mktemp("int8")
    check(run("train.py", *QUICK, *GMP, "--num_epochs", "3", "--model_path", root / "run"))
    result = check(run("export.py", "--pruned_model", root / "run", "--output", root / "out", "--format", *INT8_FORMATS,
                       "--calibration_images", "128"))
    return root, result.stdout


def trained_weights(root):
    """{variable name: array} of the trained checkpoint's model parameters."""
    state = checkpoint.verify(root / "run" / "latest")
    arrays = scripts.saved_arrays(root / "run" / "latest")
    return {var: arrays[var] for var in state["structure"].values()}, state


def test_export_compares_int8_with_float_and_prints_it(exported):
    root, stdout = exported
    manifest = json.load(open(root / "out" / "export.json"))
    assert sorted(manifest["files"]) == ["model.int8.deepsparse.onnx", "model.int8.onnx", "model.int8.sparse.npz", "model.onnx"]
    assert manifest["calibration"] == {"images": 128, "method": quantize.DEFAULT_CALIBRATION_METHOD,
                                       "data": "the first 128 fashion_mnist training images", "check_images": quantize.CHECK_IMAGES}
    for variant in quantize.VARIANT_FILES:
        result = manifest["checks"][variant]
        assert result["images"] == quantize.CHECK_IMAGES and result["top1_agreement"] >= 0.95, result
        assert 0 < result["max_abs_logit_diff"] < 1.0
        assert f"check {variant}: top-1 agreement with the float model" in stdout
    assert manifest["checks"]["sparse_int8"] == "restores model.int8.onnx byte for byte"
    assert "warning:" not in stdout


def test_int8_weights_keep_every_zero(exported):
    root, _ = exported
    trained, state = trained_weights(root)
    pruned = set(state["targets"])
    for variant, name in quantize.VARIANT_FILES.items():
        held = quantize.integer_weights(str(root / "out" / name), trained)
        # QDQ quantizes every conv and fc weight; the DeepSparse variant only the convolutions
        expected = pruned if variant == "onnx_int8" else {v for v in pruned if trained[v].ndim == 4}
        assert set(held) == expected, variant
        for var, quantized in held.items():
            assert quantized.dtype == np.int8 and quantized.shape == trained[var].shape
            zeros = trained[var] == 0
            assert zeros.any() and np.all(quantized[zeros] == 0), var


def test_deepsparse_variant_is_what_deepsparse_runs_natively(exported):
    import onnx

    root, _ = exported
    model = onnx.load(str(root / "out" / "model.int8.deepsparse.onnx"))
    ops = {node.op_type for node in model.graph.node}
    assert "QLinearConv" in ops and not ops & {"QLinearAdd", "QGemm", "QLinearMatMul"}
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 13)]  # no ai.onnx.ml import
    scales = {t.name: t for t in model.graph.initializer if t.name.endswith("_scale")}
    zero_points = {t.name: t for t in model.graph.initializer if t.name.endswith("_zero_point")}
    assert scales and all(len(t.dims) == 0 for t in scales.values())  # one scale per tensor
    weight_points = [t for name, t in zero_points.items() if name.replace("_zero_point", "_quantized") in {i.name for i in model.graph.initializer}]
    assert weight_points and all(t.data_type == onnx.TensorProto.INT8 for t in weight_points)
    assert any(t.data_type == onnx.TensorProto.UINT8 for t in zero_points.values())  # uint8 activations
    qdq = onnx.load(str(root / "out" / "model.int8.onnx"))
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in qdq.graph.node}
    assert any(len(t.dims) == 1 and t.dims[0] > 1 for t in qdq.graph.initializer if t.name.endswith("_scale"))  # per channel
    wide = [t.name for t in qdq.graph.initializer if t.name.endswith("_zero_point") and t.data_type == onnx.TensorProto.UINT16]
    stem = next(n for n in qdq.graph.node if n.op_type == "Conv")
    assert len(wide) == 2 and any(stem.input[0].startswith(name[: -len("_zero_point")]) for name in wide)  # the stem's input and output


def test_int8_sparse_file_restores_the_int8_model_and_is_smaller(exported):
    root, _ = exported
    restored, metadata = quantize.unpack(str(root / "out" / "model.int8.sparse.npz"))
    assert restored == (root / "out" / "model.int8.onnx").read_bytes()
    assert metadata["spec"]["model"] == "lenet" and metadata["calibration"]["images"] == 128
    sizes = json.load(open(root / "out" / "export.json"))["files"]
    assert sizes["model.int8.sparse.npz"] < sizes["model.int8.onnx"] / 2 < sizes["model.onnx"] / 4


def test_evaluate_int8_within_tolerance_of_float_and_same_zeros(exported, tmp_path):
    root, _ = exported
    reports = {}
    for target in ("model.onnx", "model.int8.onnx", "model.int8.sparse.npz", "model.int8.deepsparse.onnx"):
        out = tmp_path / f"{target}.json"
        check(run("evaluate.py", "--pruned_model", root / "out" / target, "--test_subset", "1000", "--json", out))
        reports[target] = json.load(open(out))
    float_report, int8 = reports["model.onnx"], reports["model.int8.onnx"]
    assert (int8["kind"], reports["model.int8.sparse.npz"]["kind"]) == ("onnx_int8", "sparse_int8")
    for name in ("model.int8.onnx", "model.int8.deepsparse.onnx"):
        assert abs(reports[name]["top1"] - float_report["top1"]) <= 0.01, (name, reports[name]["top1"], float_report["top1"])
        # every float zero stays zero; a few small weights may round to zero too
        assert float_report["pruned_sparsity"] <= reports[name]["pruned_sparsity"] <= float_report["pruned_sparsity"] + 0.01
    packed = reports["model.int8.sparse.npz"]
    assert (packed["top1"], packed["top5"], packed["pruned_sparsity"]) == (int8["top1"], int8["top5"], int8["pruned_sparsity"])
    for name in ("model.int8.onnx", "model.int8.deepsparse.onnx"):  # every pruned layer reported, int8 or left float
        assert {r["name"] for r in reports[name]["layers"] if r["pruned"]} == {r["name"] for r in float_report["layers"] if r["pruned"]}


@pytest.fixture
def inputs(exported, tmp_path):
    root, _ = exported
    return {"run": root / "run", "packed": root / "out" / "model.int8.sparse.npz", "new": tmp_path / "new", "missing": tmp_path / "missing"}


BAD = [
    (["--format", "onnx_int8", "--calibration_images", "0"], "--calibration_images: expected an integer >= 1, got '0'"),
    (["--format", "onnx_int8", "--data_dir", "{missing}"], "does not exist; create it with the data files or pass --data_dir"),
    (["--format", "onnx_int8", "--calibration_images", "59900"], "pass at most 59744"),
    (["--format", "onnx_int8", "--calibration_method", "kl"], "invalid choice: 'kl'"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_calibration_input_is_one_line_and_writes_nothing(inputs, args, message, capsys):
    import paddle

    args = ["--pruned_model", str(inputs["run"]), "--output", str(inputs["new"]), *(a.format(**{k: str(v) for k, v in inputs.items()}) for a in args)]
    before = scripts.tree_snapshot(inputs["run"])
    try:
        status = run_cli(export_cli.main, args)
    except SystemExit as exc:  # argparse's own refusal
        status = exc.code
    finally:
        paddle.disable_static()
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert status == 2 and len(errors) == 1 and message in errors[0], errors
    assert not os.path.exists(inputs["new"]) and scripts.tree_snapshot(inputs["run"]) == before


def test_packed_int8_model_is_not_a_weights_source(inputs):
    result = run("export.py", "--pruned_model", inputs["packed"], "--output", inputs["new"])
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and "is an INT8 ONNX model packed as a sparse file" in errors[0]
    assert not os.path.exists(inputs["new"])


def test_missing_quantization_tools_named_without_a_traceback(inputs, monkeypatch, capsys):
    import paddle

    scripts.block_imports(monkeypatch, lambda name, fromlist: "ml_dtypes" if name == "onnxruntime" and "quantization" in fromlist else None)
    try:
        status = run_cli(export_cli.main, ["--pruned_model", str(inputs["run"]), "--output", str(inputs["new"]), "--format", "sparse_int8"])
    finally:
        paddle.disable_static()
    err = capsys.readouterr().err
    assert status == 2 and "pip install onnxruntime ml_dtypes" in err and "ml_dtypes" in err.splitlines()[0] and "Traceback" not in err
    assert not os.path.exists(inputs["new"])


def test_entropy_and_percentile_calibrate_on_any_number_of_images(exported, tmp_path):
    """Their calibrators stack every batch's outputs: 100 images (not a multiple of the batch) must work."""
    root, _ = exported
    trained, state = trained_weights(root)
    images = np.random.default_rng(0).standard_normal((100, 1, 28, 28)).astype("float32")
    for method in ("entropy", "percentile"):
        out = str(tmp_path / f"{method}.onnx")
        quantize.quantize(str(root / "out" / "model.onnx"), out, images, "onnx_int8", method)
        assert set(quantize.integer_weights(out, trained)) == set(state["targets"])


def test_deepsparse_variant_keeps_depthwise_convolutions_float(static_mode, tmp_path):
    """Per-tensor scales cannot hold a depthwise conv with BatchNorm folded in: those stay float, the rest int8."""
    import onnx
    import paddle

    from suite.deploy import export
    from suite.training import program

    _, _, scope = static_mode
    graph = program.build_test("MobileNet", 0.25, 28, 1, 10)
    exe = paddle.static.Executor(paddle.CPUPlace())
    exe.run(graph.startup)
    spec = {"model": "mobilenet_v1", "scale": 0.25, "image_size": 28, "in_channels": 1, "num_classes": 10, "data": "fashion_mnist", "data_dir": None}
    export.export(graph, exe, scope, spec, ["onnx"], str(tmp_path / "out"), "random weights", {})
    images = np.random.default_rng(0).standard_normal((32, 1, 28, 28)).astype("float32")
    path = str(tmp_path / "ds.onnx")
    quantize.quantize(str(tmp_path / "out" / "model.onnx"), path, images, "onnx_int8_deepsparse")
    nodes = onnx.load(path).graph.node
    groups = {op: [next((a.i for a in n.attribute if a.name == "group"), 1) for n in nodes if n.op_type == op] for op in ("QLinearConv", "Conv")}
    assert len(groups["QLinearConv"]) == 14 and set(groups["QLinearConv"]) == {1}  # the stem and 13 pointwise convs
    assert len(groups["Conv"]) == 13 and 1 not in groups["Conv"]  # 13 depthwise convs


def test_failed_quantization_is_one_line_and_leaves_nothing(inputs, monkeypatch, capsys):
    import onnxruntime.quantization
    import paddle

    def refuse(*args, **kwargs):
        raise RuntimeError("Unsupported op type: FancyOp")

    monkeypatch.setattr(onnxruntime.quantization, "quantize_static", refuse)
    try:
        status = run_cli(export_cli.main, ["--pruned_model", str(inputs["run"]), "--output", str(inputs["new"]), "--format", "onnx_int8"])
    finally:
        paddle.disable_static()
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert status == 4 and errors == ["error: ONNX Runtime could not quantize the model to onnx_int8 (RuntimeError: Unsupported op type: FancyOp); the export was not kept"]
    parent = os.path.dirname(inputs["new"])
    assert not os.path.exists(inputs["new"]) and not [n for n in os.listdir(parent) if n.startswith(".tmp-export")]
