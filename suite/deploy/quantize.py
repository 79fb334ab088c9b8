"""INT8 ONNX models made from the float ONNX export by ONNX Runtime's post-training static quantization
(`onnxruntime.quantization.quantize_static`), calibrated on training images, with symmetric int8 weights
so that every zero weight stays exactly zero.

Two variants of the same model:
  onnx_int8             QDQ, one scale per output channel, every op ONNX Runtime quantizes, the stem convolution's
                        input and output activations at 16 bits: for ONNX Runtime and OpenVINO, whose INT8
                        kernels fuse QuantizeLinear/DequantizeLinear pairs;
  onnx_int8_deepsparse  QOperator (QLinearConv), one scale per tensor, uint8 activations, Conv only (depthwise convs
                        stay float): what DeepSparse 1.8 runs natively (QDQ, per-channel scales, QLinearAdd or QGemm
                        send it back to its bundled ONNX Runtime, which also rejects the unused `ai.onnx.ml` opset
                        the quantizer adds).
The INT8 model can also ship as a sparse file (`pack`/`unpack`): its initializers in the compressed sparse
format, the graph beside them, restoring the ONNX file byte for byte.
"""
import math
import os
import tempfile
from dataclasses import dataclass

import numpy as np

from suite import data
from suite.artefacts import sparse_file
from suite.errors import ConfigError, DataError, WriteError

VARIANT_FILES = {"onnx_int8": "model.int8.onnx", "onnx_int8_deepsparse": "model.int8.deepsparse.onnx"}
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
DEFAULT_CALIBRATION_METHOD = "minmax"
DEFAULT_CALIBRATION_IMAGES = 256
CHECK_IMAGES = 256  # training images after the calibration ones, on which the INT8 model is compared with the float one
MIN_AGREEMENT = 0.95  # below this top-1 agreement with the float model the export warns
PACKAGES = "pip install onnxruntime ml_dtypes (ONNX Runtime's quantization tools import ml_dtypes)"
QUANTIZED_SUFFIX = "_quantized"  # what ONNX Runtime's quantizer appends to the name of a weight it quantizes
GRAPH_ENTRY = "onnx:graph"  # the packed sparse file's entry holding the ONNX model without its initializers
CALIBRATION_BATCH = 32


def require_quantization():
    """Import ONNX Runtime's quantization tools, or a ConfigError naming the packages to install."""
    try:
        import onnx  # noqa: F401
        from onnxruntime import quantization  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"INT8 export needs ONNX Runtime's quantization tools, which do not import here ({exc}); install them: {PACKAGES}") from exc


@dataclass
class Calibration:
    """What the INT8 formats are calibrated on (`images`) and checked on (`check_images`), and how."""

    images: np.ndarray
    check_images: np.ndarray
    method: str
    data: str

    def describe(self):
        return {"images": len(self.images), "method": self.method, "data": self.data, "check_images": len(self.check_images)}


def calibration_images(spec, count, method=DEFAULT_CALIBRATION_METHOD, data_dir=None):
    """A Calibration: the first COUNT training images of the model's dataset, and the CHECK_IMAGES after them."""
    if count < 1:
        raise ConfigError(f"--calibration_images {count} must be >= 1 (a few hundred training images calibrate well)")
    if method not in CALIBRATION_METHODS:
        raise ConfigError(f"--calibration_method {method!r} is not a method; choose from {' '.join(CALIBRATION_METHODS)}")
    train = data.load_dataset(spec["data"], "train", data_dir or spec["data_dir"], spec["image_size"], count + CHECK_IMAGES)
    if len(train) < count + CHECK_IMAGES:
        raise DataError(
            f"--calibration_images {count}: {spec['data']} has {len(train)} training images here, and {CHECK_IMAGES} more than "
            f"the calibration images are needed for the check; pass at most {len(train) - CHECK_IMAGES}"
        )
    images = np.concatenate([batch for batch, _ in data.batches(train, 256, False, drop_last=False)])[: len(train)]
    return Calibration(images[:count], images[count:], method, f"the first {count} {spec['data']} training images")


class _Batches:
    """ONNX Runtime's CalibrationDataReader protocol (get_next) over an array of images, in batches of one size
    (the entropy and percentile calibrators stack every batch's outputs, so a shorter last batch breaks them)."""

    def __init__(self, input_name, images):
        size = math.gcd(len(images), CALIBRATION_BATCH)
        self._feeds = iter({input_name: images[i : i + size]} for i in range(0, len(images), size))

    def get_next(self):
        return next(self._feeds, None)


def _variant_options(variant, model):
    """quantize_static's arguments for VARIANT of the prepared MODEL (a ModelProto)."""
    from onnxruntime.quantization import QuantFormat, QuantType

    common = {"activation_type": QuantType.QUInt8, "weight_type": QuantType.QInt8, "extra_options": {"WeightSymmetric": True}}
    if variant == "onnx_int8":
        # 8 bits at the stem's input and output cost a point of top-1 on MobileNetV1 x0.25 (Fashion-MNIST), 16 bits none:
        # a few percent of the FLOPs run unfused for it.
        wider = {name: [{"quant_type": QuantType.QUInt16}] for name in _stem_activations(model)}
        return {**common, "quant_format": QuantFormat.QDQ, "per_channel": True, "extra_options": {"WeightSymmetric": True, "TensorQuantOverrides": wider}}
    # One scale per tensor cannot hold a depthwise conv's channels once BatchNorm is folded in (their ranges differ by
    # orders of magnitude: MobileNetV1 fell to chance), so depthwise convolutions stay float.
    depthwise = [node.name for node in model.graph.node if node.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in node.attribute)]
    return {**common, "quant_format": QuantFormat.QOperator, "per_channel": False, "op_types_to_quantize": ["Conv"], "nodes_to_exclude": depthwise}


def _stem_activations(model):
    """The input and output activations of MODEL's first convolution (its output after the ReLU or Clip that follows it)."""
    conv = next(node for node in model.graph.node if node.op_type == "Conv")
    consumers = [node for node in model.graph.node if conv.output[0] in node.input]
    activation = len(consumers) == 1 and consumers[0].op_type in ("Relu", "Clip")
    return [conv.input[0], consumers[0].output[0] if activation else conv.output[0]]


def quantize(float_path, output, calibration, variant, method=DEFAULT_CALIBRATION_METHOD):
    """Write the INT8 VARIANT of the float ONNX model at FLOAT_PATH to OUTPUT, calibrated on CALIBRATION images."""
    require_quantization()
    import onnx
    import onnxruntime
    from onnxruntime.quantization import CalibrationMethod, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    onnxruntime.set_default_logger_severity(3)  # the optimizer warns about every unused initializer paddle2onnx leaves
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}
    input_name = onnx.load(float_path, load_external_data=False).graph.input[0].name
    with tempfile.TemporaryDirectory() as tmp:
        prepared = os.path.join(tmp, "prepared.onnx")  # BatchNorm folded into the convolutions, shapes inferred
        try:
            quant_pre_process(float_path, prepared, skip_symbolic_shape=True)
            options = _variant_options(variant, onnx.load(prepared, load_external_data=False))
            quantize_static(prepared, output, _Batches(input_name, calibration), calibrate_method=methods[method], **options)
        except Exception as exc:  # noqa: BLE001 - the quantizer fails in many ways (unsupported ops, shapes): each is reported alike
            raise WriteError(f"ONNX Runtime could not quantize the model to {variant} ({type(exc).__name__}: {exc}); the export was not kept") from exc
    onnx.save(_canonical(onnx.load(output)), output)


def _canonical(model):
    """MODEL with only the opset imports its nodes use and every initializer stored as raw bytes (what pack restores)."""
    from onnx import numpy_helper

    used = {node.domain for node in model.graph.node}
    kept = [opset for opset in model.opset_import if opset.domain in used or opset.domain in ("", "ai.onnx")]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    tensors = [numpy_helper.from_array(numpy_helper.to_array(t), t.name) for t in model.graph.initializer]
    del model.graph.initializer[:]
    model.graph.initializer.extend(tensors)
    return model


def layer_weights(model, variables):
    """{variable name: array} of the convolution and classifier weights of MODEL (an ONNX path, bytes or ModelProto)
    made from the Paddle VARIABLES: int8 where quantized, float where left float (a prefix names a weight BatchNorm was
    folded into, a suffix one the quantizer quantized)."""
    import onnx
    from onnx import numpy_helper

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load_from_string(model) if isinstance(model, bytes) else onnx.load(model)
    found = {}
    for tensor in model.graph.initializer:
        if len(tensor.dims) < 2:
            continue
        source = tensor.name.removesuffix(QUANTIZED_SUFFIX)
        matches = [var for var in variables if source == var or source.endswith("_" + var)]
        if len(matches) == 1 and (matches[0] not in found or tensor.data_type == onnx.TensorProto.INT8):
            found[matches[0]] = numpy_helper.to_array(tensor)
    return found


def integer_weights(model, variables):
    """The int8 weights among layer_weights: what was quantized; {} for a float model."""
    return {var: array for var, array in layer_weights(model, variables).items() if array.dtype == np.int8}


def check(float_predict, int8_predict, images, int8_weights, float_weights):
    """How the INT8 model compares with the float one on IMAGES, and that every zero weight stayed zero.

    A zero lost, or a quantized weight of another shape, is a WriteError (a bug: symmetric int8 maps 0 to 0).
    """
    expected, got = float_predict(images), int8_predict(images)
    if not int8_weights:
        raise WriteError("the quantized model holds no int8 weights of this model's layers; the export was not kept")
    for var, quantized in int8_weights.items():
        original = float_weights[var]
        if quantized.shape != original.shape or np.any((original == 0) & (quantized != 0)):
            raise WriteError(f"int8 weights of {var} do not keep its zeros (shape {list(quantized.shape)}, float {list(original.shape)}); the export was not kept")
    size = sum(w.size for w in int8_weights.values())
    return {
        "images": int(len(images)),
        "top1_agreement": float(np.mean(expected.argmax(1) == got.argmax(1))),
        "max_abs_logit_diff": float(np.max(np.abs(expected - got))),
        "int8_tensors": len(int8_weights),
        "float_sparsity": float(sum(np.count_nonzero(float_weights[v] == 0) for v in int8_weights) / size),
        "int8_sparsity": float(sum(np.count_nonzero(w == 0) for w in int8_weights.values()) / size),
    }


def describe(fmt, result):
    """The lines export.py prints for the check of an INT8 format: the comparison, and a warning when agreement is low."""
    lines = [
        f"top-1 agreement with the float model {result['top1_agreement']:.2%} on {result['images']} training images, "
        f"max |logit difference| {result['max_abs_logit_diff']:.3g}; every zero kept: sparsity of the {result['int8_tensors']} "
        f"int8 weight tensors {result['int8_sparsity']:.4f} (float {result['float_sparsity']:.4f}; more where small weights round to 0)"
    ]
    if result["top1_agreement"] < MIN_AGREEMENT:
        lines.append(
            f"warning: {fmt} agrees with the float model on only {result['top1_agreement']:.1%} of the check images "
            f"(below {MIN_AGREEMENT:.0%}); evaluate it before shipping, or try another --calibration_method or more --calibration_images"
        )
    return lines


def pack(onnx_path, path, metadata):
    """Write the ONNX model at ONNX_PATH as a sparse file at PATH: its initializers as tensors (zeros as bits),
    the rest of the model as one byte entry; METADATA (JSON) goes in the header. Returns the file's size."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(onnx_path)
    tensors = {GRAPH_ENTRY: None}
    tensors.update((t.name, numpy_helper.to_array(t)) for t in model.graph.initializer)
    del model.graph.initializer[:]
    tensors[GRAPH_ENTRY] = np.frombuffer(model.SerializeToString(), np.uint8)
    return sparse_file.write(path, tensors, {**metadata, "onnx": True})


def is_packed(metadata):
    """True for the metadata of a sparse file written by pack (an ONNX model, not Paddle weights)."""
    return bool(metadata.get("onnx"))


def unpack(path):
    """(ONNX model bytes, metadata) of a sparse file written by pack: the model it was made from, byte for byte."""
    import onnx
    from onnx import numpy_helper

    tensors, metadata = sparse_file.read(path)
    if not is_packed(metadata) or GRAPH_ENTRY not in tensors:
        raise ValueError(f"{path} holds Paddle weights, not an ONNX model")
    model = onnx.ModelProto.FromString(tensors.pop(GRAPH_ENTRY).tobytes())
    model.graph.initializer.extend(numpy_helper.from_array(array, name) for name, array in tensors.items())
    return model.SerializeToString(), metadata
