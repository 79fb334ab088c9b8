"""What deployed models run on: Paddle Inference and ONNX Runtime, as `predict(images) -> logits`
callables, and the weights each exported file holds (for sparsity reports)."""
import os
from contextlib import contextmanager

import numpy as np
import paddle

from sparsity import static
from suite.artefacts import staging, untrusted
from suite.errors import CheckpointError, ConfigError, SuiteError

INFERENCE_PREFIX = "model"
ONNX_PACKAGES = "pip install paddle2onnx==2.1.0 onnxruntime (with Paddle 2.6: paddle2onnx==1.3.1 onnxruntime 'onnx<1.18')"


def inference_model_files(folder):
    """(model file, params file) of the Paddle inference model in FOLDER: model.json (PIR) or model.pdmodel (legacy IR)."""
    params = os.path.join(folder, INFERENCE_PREFIX + ".pdiparams")
    for suffix in (".json", ".pdmodel"):
        model = os.path.join(folder, INFERENCE_PREFIX + suffix)
        if os.path.isfile(model) and os.path.isfile(params):
            return model, params
    return None


def _summary(exc):
    """The line of a runtime's error that says what went wrong (Paddle's come inside a C++ stack: its line starts
    with the error kind in parentheses)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip() and not line.strip().startswith("-")]
    paddle_kind = [line for line in lines if line.startswith("(")]
    return (paddle_kind or lines or [type(exc).__name__])[0][:300]


@contextmanager
def _reading(path, runtime, doing="cannot load it"):
    """What a runtime raises while reading or running the model at PATH becomes one CheckpointError naming it."""
    try:
        yield
    except SuiteError:
        raise
    except Exception as exc:  # runtimes raise their own types (RuntimeError, pybind errors, protobuf DecodeError, ...)
        raise CheckpointError(f"{staging.shown(path)}: {runtime} {doing} ({_summary(exc)})") from exc


def paddle_inference(folder, place):
    """predict(images) with Paddle Inference (`paddle.inference.create_predictor`) on the model in FOLDER."""
    model_file, params_file = inference_model_files(folder)
    files = f"{model_file} + {os.path.basename(params_file)}"
    with _reading(files, "Paddle Inference"):
        config = paddle.inference.Config(model_file, params_file)
        if isinstance(place, paddle.CUDAPlace):
            config.enable_use_gpu(256, place.get_device_id())
        else:
            config.disable_gpu()
        config.disable_glog_info()
        predictor = paddle.inference.create_predictor(config)
        feed = predictor.get_input_handle(predictor.get_input_names()[0])
        fetch = predictor.get_output_handle(predictor.get_output_names()[0])

    def predict(images):
        images = np.ascontiguousarray(images, "float32")
        with _reading(files, "Paddle Inference", f"cannot run it on images of shape {list(images.shape)}"):
            feed.reshape(list(images.shape))
            feed.copy_from_cpu(images)
            predictor.run()
            return fetch.copy_to_cpu()

    return predict


def inference_weights(folder, place):
    """{variable name: array} of every persistable of the Paddle inference model in FOLDER."""
    paddle.enable_static()
    exe = paddle.static.Executor(place)
    scope = paddle.static.Scope()
    prefix = os.path.join(folder, INFERENCE_PREFIX)
    model_file, params_file = inference_model_files(folder)
    with paddle.static.scope_guard(scope), _reading(f"{model_file} + {os.path.basename(params_file)}", "Paddle"):
        program, _, _ = paddle.static.load_inference_model(prefix, exe)
        return {name: static.read(scope, name) for name in static.persistables(program)}


def require_onnx():
    """Import onnxruntime and paddle2onnx, or a ConfigError naming the packages to install."""
    try:
        import onnxruntime  # noqa: F401
        import paddle2onnx  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"ONNX needs the paddle2onnx and onnxruntime packages ({exc}); install them: {ONNX_PACKAGES}") from exc


def onnx_missing():
    """None when ONNX export can run here, else the message naming the packages to install."""
    try:
        require_onnx()
    except ConfigError as exc:
        return str(exc)
    return None


def onnx_runtime(path, place):
    """predict(images) with ONNX Runtime on the ONNX file at PATH, or model bytes (CUDA when the place is a GPU and ORT has it)."""
    require_onnx()
    import onnxruntime

    providers = ["CPUExecutionProvider"]
    if isinstance(place, paddle.CUDAPlace) and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: paddle2onnx leaves unused initializers that ORT warns about
    label = _label(path)
    if isinstance(path, str):
        _confined_onnx(path)  # before ONNX Runtime reads any external data
    with _reading(label, "ONNX Runtime"):
        session = onnxruntime.InferenceSession(path, options, providers=providers)
        name = session.get_inputs()[0].name

    def predict(images):
        images = np.ascontiguousarray(images, "float32")
        with _reading(label, "ONNX Runtime", f"cannot run it on images of shape {list(images.shape)}"):
            return session.run(None, {name: images})[0]

    return predict


def _label(path):
    """How messages name an ONNX model given as a path or as bytes (a packed INT8 model's)."""
    return path if isinstance(path, str) else "the ONNX model packed in the INT8 sparse file"


def _confined_onnx(path):
    """The ONNX model at PATH, without its external data, once every location it names for that data is checked to
    be a file inside PATH's folder (an absolute path, `..` or a symbolic link out of it is refused)."""
    import onnx
    from onnx import external_data_helper

    with _reading(path, "onnx"):
        model = onnx.load(path, load_external_data=False)
        named = [external_data_helper.ExternalDataInfo(t).location for t in external_data_helper._get_all_tensors(model)
                 if external_data_helper.uses_external_data(t)]
    for location in named:
        untrusted.inside(os.path.dirname(os.path.abspath(path)), location, path)
    return model


def onnx_weights(path):
    """{name: array} of the weights in an ONNX file (or model bytes): its initializers and Constant nodes (paddle2onnx
    writes weights as either, named after Paddle's variables)."""
    require_onnx()
    from onnx import external_data_helper, numpy_helper

    if isinstance(path, bytes):  # a packed INT8 model's own bytes (its file was read and checked already)
        with _reading(_label(path), "onnx", "cannot read its weights"):
            import onnx

            model = onnx.load_from_string(path)
    else:
        model = _confined_onnx(path)
        with _reading(path, "onnx", "cannot read its weights"):
            external_data_helper.load_external_data_for_model(model, os.path.dirname(os.path.abspath(path)))
    with _reading(_label(path), "onnx", "cannot read its weights"):
        graph = model.graph
        found = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant":
                value = next((a.t for a in node.attribute if a.name == "value"), None)
                if value is not None:
                    found[node.output[0]] = numpy_helper.to_array(value)
    return found
