"""What deployed models run on: Paddle Inference and ONNX Runtime, as `predict(images) -> logits`
callables, and the weights each exported file holds (for sparsity reports)."""
import os

import numpy as np
import paddle

from sparsity import static
from suite.errors import ConfigError

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


def paddle_inference(folder, place):
    """predict(images) with Paddle Inference (`paddle.inference.create_predictor`) on the model in FOLDER."""
    model_file, params_file = inference_model_files(folder)
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
    with paddle.static.scope_guard(scope):
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
    session = onnxruntime.InferenceSession(path, options, providers=providers)
    name = session.get_inputs()[0].name

    def predict(images):
        return session.run(None, {name: np.ascontiguousarray(images, "float32")})[0]

    return predict


def onnx_weights(path):
    """{name: array} of the weights in an ONNX file (or model bytes): its initializers and Constant nodes (paddle2onnx
    writes weights as either, named after Paddle's variables)."""
    require_onnx()
    import onnx
    from onnx import numpy_helper

    graph = (onnx.load_from_string(path) if isinstance(path, bytes) else onnx.load(path)).graph
    found = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is not None:
                found[node.output[0]] = numpy_helper.to_array(value)
    return found
