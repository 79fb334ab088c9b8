"""Export trained weights for deployment, each artefact checked against the test program before it is kept.

Formats: `paddle` (an inference model of the test program: no masks, no optimizer state, no training
ops), `onnx` (converted from it by paddle2onnx, run by ONNX Runtime), `sparse` (the compressed sparse
weights file, see suite/artefacts/sparse_file.py) and, on request, `state_dict` (`model.pdparams` keyed by structural
names, as the model zoo's files: for `layer.set_state_dict(paddle.load(...))` or `--pretrained_model`), and the INT8
formats of suite/deploy/quantize.py: `onnx_int8`, `onnx_int8_deepsparse`, and `sparse_int8` (the int8 ONNX model as
a sparse file). Everything is written into a staging folder beside OUTPUT (suite/artefacts/staging.py) and renamed
into place at the end, so a failed export leaves nothing behind and never touches an existing folder.
"""
import json
import os
import subprocess
import sys

import numpy as np
import paddle

from sparsity import static
from suite.artefacts import checkpoint, sparse_file, staging, weights
from suite.deploy import quantize, runtimes
from suite.errors import CheckpointError, ConfigError, WriteError
from suite.training.log import Eta

INT8_FORMATS = ("onnx_int8", "onnx_int8_deepsparse", "sparse_int8")
FORMATS = ("paddle", "onnx", "sparse", "state_dict", *INT8_FORMATS)
DEFAULT_FORMATS = ("paddle", "onnx", "sparse")
ONNX_FILE = "model.onnx"
STATE_DICT_FILE = "model.pdparams"
SPARSE_FILE = "model" + sparse_file.SUFFIX
SPARSE_INT8_FILE = "model.int8" + sparse_file.SUFFIX
FORMAT_FILES = {"paddle": "", "onnx": ONNX_FILE, "sparse": SPARSE_FILE, "state_dict": STATE_DICT_FILE,
                **quantize.VARIANT_FILES, "sparse_int8": SPARSE_INT8_FILE}  # what evaluate.py is pointed at, in OUTPUT
MANIFEST = weights.EXPORT_MANIFEST
ONNX_OPSET = 13
SAMPLE_BATCH = 8
# Paddle Inference and ONNX Runtime fuse ops (BatchNorm into conv) and so round differently: logits may
# differ by this fraction of their largest magnitude (float32 rounding is about 1e-7 of it per op).
RELATIVE_TOLERANCE = 1e-4


def default_formats():
    """The deployable formats whose packages are installed."""
    return [f for f in DEFAULT_FORMATS if f != "onnx" or runtimes.onnx_missing() is None]


def check_output(output):
    """OUTPUT must be new (or an empty folder): an export never writes over earlier results."""
    if os.path.lexists(output) and not (os.path.isdir(output) and not os.listdir(output)):
        raise ConfigError(f"--output {output} already exists and is not empty; pass a new folder (exports never overwrite)")


def export(graph, exe, scope, spec, formats, output, source_path, targets, calibration=None, progress=print):
    """Write the chosen formats of the weights now in `scope` (loaded into `graph`, a program.TestGraph) to OUTPUT.

    `targets` maps the pruned tensors' structural names to their target ratios; `calibration` (a quantize.Calibration)
    is needed by the INT8 formats; `progress(line)` gets a line (with an ETA) as each format is written and checked.
    Returns the manifest (files, sizes, checks).
    """
    check_output(output)
    require_packages(formats)
    if calibration is None and set(formats) & set(INT8_FORMATS):
        raise ConfigError(f"--format {' '.join(f for f in formats if f in INT8_FORMATS)} needs calibration images (quantize.calibration_images)")
    with staging.staged_folder(output, "the export to") as folder:
        return _write_all(graph, exe, scope, spec, formats, folder, source_path, targets, calibration, progress)


def require_packages(formats):
    """A ConfigError naming what to install when FORMATS need packages this environment lacks."""
    if _needs_onnx(formats):
        runtimes.require_onnx()
    if set(formats) & set(INT8_FORMATS):
        quantize.require_quantization()


def _needs_onnx(formats):
    """True when FORMATS include ONNX or anything quantized from it."""
    return "onnx" in formats or bool(set(formats) & set(INT8_FORMATS))


def _write_all(graph, exe, scope, spec, formats, folder, source_path, targets, calibration, progress):
    eta = Eta(len(formats))

    def checked(fmt):
        progress(f"exported and checked {fmt} ({len([f for f in formats if f in checks])}/{len(formats)}), "
                 f"{eta.update(len([f for f in formats if f in checks]))}")

    rng = np.random.default_rng(0)
    sample = rng.standard_normal((SAMPLE_BATCH, spec["in_channels"], spec["image_size"], spec["image_size"])).astype("float32")
    (expected,) = exe.run(graph.test, feed={"image": sample}, fetch_list=[graph.logits], scope=scope)
    place = exe.place if hasattr(exe, "place") else paddle.CPUPlace()
    checks = {}
    tensors = {key: static.read(scope, var) for key, var in graph.structure.items()}

    if "paddle" in formats or _needs_onnx(formats):  # paddle2onnx converts the inference model (removed if not asked for)
        paddle.static.save_inference_model(
            os.path.join(folder, runtimes.INFERENCE_PREFIX), [graph.images], [graph.logits], exe, program=graph.test
        )
        checks["paddle"] = _compare("Paddle Inference", _run_check(runtimes.paddle_inference, folder, place, sample), expected)
        if "paddle" in formats:
            checked("paddle")
    if _needs_onnx(formats):  # the INT8 formats are quantized from it (removed if not asked for)
        onnx_path = os.path.join(folder, ONNX_FILE)
        _convert_to_onnx(folder, onnx_path)
        checks["onnx"] = _compare("ONNX Runtime", _run_check(runtimes.onnx_runtime, onnx_path, place, sample), expected)
        if "paddle" not in formats:
            for path in runtimes.inference_model_files(folder):
                os.remove(path)
            del checks["paddle"]
        if "onnx" in formats:
            checked("onnx")
    if set(formats) & set(INT8_FORMATS):
        float_weights = {graph.structure[key]: array for key, array in tensors.items()}
        metadata = {"spec": spec, "targets": dict(targets), "structure": graph.structure}
        _write_int8(folder, formats, calibration, place, float_weights, metadata, checks, checked)
        if "onnx" not in formats:
            os.remove(os.path.join(folder, ONNX_FILE))
            del checks["onnx"]
    if "sparse" in formats:
        path = os.path.join(folder, SPARSE_FILE)
        sparse_file.write(path, tensors, metadata={"spec": spec, "targets": dict(targets)})
        checks["sparse"] = _check_round_trip(path, sparse_file.read(path)[0], tensors)
        checked("sparse")
    if "state_dict" in formats:
        path = os.path.join(folder, STATE_DICT_FILE)
        paddle.save(tensors, path, protocol=4)
        checks["state_dict"] = _check_round_trip(path, weights.read_state_dict(path), tensors)
        checked("state_dict")
    dense_bytes = sum(a.nbytes for a in tensors.values())
    manifest = {
        "format_version": 1,
        "spec": spec,
        "source": os.path.abspath(source_path),
        "ir": "pir" if static.pir_enabled() else "legacy",
        "paddle_version": paddle.__version__,
        "dense_float32_bytes": int(dense_bytes),
        "files": {name: os.path.getsize(os.path.join(folder, name)) for name in sorted(os.listdir(folder))},
        "sha256": {name: checkpoint.sha256_of(os.path.join(folder, name)) for name in sorted(os.listdir(folder))},
        "checks": checks,
        "targets": dict(targets),
        "structure": graph.structure,
        "calibration": calibration.describe() if calibration else None,
    }
    with open(os.path.join(folder, MANIFEST), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    return manifest


def _write_int8(folder, formats, calibration, place, float_weights, metadata, checks, checked):
    """The INT8 formats asked for, quantized from model.onnx in FOLDER and checked against it, their checks added to
    `checks`. sparse_int8 packs model.int8.onnx (made for it, and removed if onnx_int8 was not asked for)."""
    float_path = os.path.join(folder, ONNX_FILE)
    float_predict = _run_check(runtimes.onnx_runtime, float_path, place)
    for variant, name in quantize.VARIANT_FILES.items():
        if variant in formats or (variant == "onnx_int8" and "sparse_int8" in formats):
            path = os.path.join(folder, name)
            quantize.quantize(float_path, path, calibration.images, variant, calibration.method)
            held = quantize.integer_weights(path, float_weights)
            int8_predict = _run_check(runtimes.onnx_runtime, path, place)
            checks[variant] = quantize.check(float_predict, int8_predict, calibration.check_images, held, float_weights)
            if variant in formats:
                checked(variant)
    if "sparse_int8" in formats:
        int8_path, packed = os.path.join(folder, FORMAT_FILES["onnx_int8"]), os.path.join(folder, SPARSE_INT8_FILE)
        quantize.pack(int8_path, packed, {**metadata, "calibration": calibration.describe()})
        with open(int8_path, "rb") as f:
            if quantize.unpack(packed)[0] != f.read():
                raise WriteError(f"{packed} does not restore {FORMAT_FILES['onnx_int8']} byte for byte; this is a bug, please report it")
        checks["sparse_int8"] = f"restores {FORMAT_FILES['onnx_int8']} byte for byte"
        checked("sparse_int8")
        if "onnx_int8" not in formats:
            os.remove(int8_path)
            del checks["onnx_int8"]


def _run_check(runtime, path, place, sample=None):
    """The runtime's predict() for the file just written, or its logits for `sample`; a runtime refusing the file
    fails the export's check."""
    try:
        predict = runtime(path, place)
        return predict if sample is None else predict(sample)
    except CheckpointError as exc:
        raise WriteError(f"{exc}; the export failed its check and was not kept") from exc


def describe_check(fmt, check):
    """The lines export.py prints for the check of format FMT."""
    if fmt in quantize.VARIANT_FILES:
        return quantize.describe(fmt, check)
    if isinstance(check, dict):
        return [f"max |difference| {check['max_abs_diff']:.2e} from the test program"]
    return [check]


def _check_round_trip(path, restored, tensors):
    if restored.keys() != tensors.keys() or any(restored[k].tobytes() != tensors[k].tobytes() for k in tensors):
        raise WriteError(f"{path} does not restore the exact weights; this is a bug, please report it")
    return "bit-identical round trip"


def _compare(runtime, got, expected):
    """Max abs difference of a runtime's logits from the test program's; an error when they disagree."""
    if got.shape != expected.shape:
        raise WriteError(f"{runtime} outputs have shape {list(got.shape)}, the test program's {list(expected.shape)}; the export was not kept")
    diff = float(np.max(np.abs(got - expected)))
    allowed = RELATIVE_TOLERANCE * max(1.0, float(np.max(np.abs(expected))))
    if not diff <= allowed:
        raise WriteError(f"{runtime} outputs differ from the test program's by up to {diff:.3g} (allowed {allowed:.3g}); the export was not kept")
    return {"max_abs_diff": diff}


def _convert_to_onnx(folder, onnx_path):
    """paddle2onnx in a child process (its C++ side logs to stdout and cannot be quietened in-process)."""
    model_file, params_file = runtimes.inference_model_files(folder)
    # paddle2onnx 2.x (Paddle 3) would run polygraphy, which pip-installs packages at run time: use onnxoptimizer;
    # paddle2onnx 1.x (Paddle 2.6) has no such choice.
    code = (
        "import inspect, sys, paddle2onnx\n"
        "extra = {'optimize_tool': 'onnxoptimizer'} if 'optimize_tool' in inspect.signature(paddle2onnx.export).parameters else {}\n"
        "paddle2onnx.export(sys.argv[1], sys.argv[2], sys.argv[3], opset_version=int(sys.argv[4]), **extra)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, model_file, params_file, onnx_path, str(ONNX_OPSET)], capture_output=True, text=True
    )
    if result.returncode != 0 or not os.path.isfile(onnx_path):
        tail = " | ".join((result.stdout + result.stderr).strip().splitlines()[-3:])
        raise WriteError(f"paddle2onnx could not convert the model ({tail}); the export was not kept")
