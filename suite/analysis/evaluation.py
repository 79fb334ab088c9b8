"""Evaluation of what a user saved or ships: any artefact opened as `predict(images) -> logits` plus the weights it holds.

Weights sources (a checkpoint, a state-dict file, a compressed sparse file) run in a static test
program; exported models run on what they were exported for (Paddle Inference, ONNX Runtime), with
the model and data facts read from the export.json beside them.
"""
import os
from dataclasses import dataclass

import numpy as np
import paddle

from sparsity import flops, selection, static
from suite.artefacts import sparse_file, staging, weights
from suite.deploy import quantize, runtimes
from suite.errors import CheckpointError, ConfigError
from suite.training import loop
from suite.training.program import build_test, load_test_graph, resolve_spec


@dataclass
class Artefact:
    kind: str  # checkpoint, state_dict, sparse, paddle_inference, onnx, onnx_int8 or sparse_int8
    path: str
    spec: dict
    predict: object
    weights: dict  # {variable name: array}: the model's parameters as the artefact holds them
    targets: dict  # {variable name: target ratio (None: unknown)} of the pruned tensors
    layers: dict  # {variable name: structural name}
    counts: tuple = ()  # (flops.Count of this model, of the dense model it was slimmed from, or None)


def deployed_kind(path):
    """'paddle_inference', 'onnx' or 'sparse_int8' (an INT8 ONNX model packed as a sparse file) for an exported model
    at PATH, else None (a weights source)."""
    if path.endswith(".onnx") and os.path.isfile(path):
        return "onnx"
    if path.endswith(sparse_file.SUFFIX) and os.path.isfile(path) and quantize.is_packed(sparse_file.read_metadata(path)):
        return "sparse_int8"
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    is_model_file = os.path.isfile(path) and os.path.basename(path) in ("model.json", "model.pdmodel", "model.pdiparams")
    if (os.path.isdir(path) or is_model_file) and runtimes.inference_model_files(folder):
        return "paddle_inference"
    return None


# Facts an exported model has built in: a flag naming them cannot change what runs, so it is refused, not ignored.
FIXED_IN_EXPORTS = ("model", "scale", "image_size", "num_classes")


def open_artefact(path, overrides, place):
    """The Artefact at PATH; `overrides` ({flag: value or None}) replace the model/data facts saved with it."""
    staging.refuse_staged(path)
    kind = deployed_kind(path)
    if kind is None:
        return _open_weights(weights.read(path), overrides, place)
    fixed = [f"--{key}" for key in FIXED_IN_EXPORTS if overrides.get(key) is not None]
    if fixed:
        raise ConfigError(f"{' and '.join(fixed)} cannot apply to {path}, an exported model: its model, scale, input size and "
                          f"classes were fixed when it was exported; drop {'them' if len(fixed) > 1 else 'it'}")
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    model, manifest = quantize.unpack(path) if kind == "sparse_int8" else (path, weights.export_manifest(folder))
    if manifest is None:
        raise CheckpointError(f"{path}: no {weights.EXPORT_MANIFEST} beside it; evaluate.py reads models written by export.py")
    spec = resolve_spec(manifest["spec"], overrides)
    layers = {var: key for key, var in manifest["structure"].items()}
    targets = {manifest["structure"][key]: target for key, target in manifest["targets"].items()}
    if kind == "paddle_inference":
        weights.verify_export_files(folder, manifest, [os.path.basename(f) for f in runtimes.inference_model_files(folder)])
        predict, held = runtimes.paddle_inference(folder, place), runtimes.inference_weights(folder, place)
    else:  # a quantized model holds its conv and classifier weights with BatchNorm folded in: int8, or float where left so
        if kind == "onnx":
            weights.verify_export_files(folder, manifest, [os.path.basename(path)])
        predict, held = runtimes.onnx_runtime(model, place), runtimes.onnx_weights(model)  # each refuses a broken file in one line
        layer = quantize.layer_weights(model, layers)
        held.update(layer)
        kind = "onnx_int8" if kind == "onnx" and any(w.dtype == np.int8 for w in layer.values()) else kind
    return Artefact(kind, path, spec, predict, {var: held[var] for var in layers if var in held}, targets, layers, model_counts(spec))


def _open_weights(source, overrides, place):
    spec = resolve_spec(source.spec, overrides)
    graph, exe, scope = load_test_graph(source, spec, place)
    held = {var: static.read(scope, var) for var in graph.structure.values()}
    if source.targets:
        targets = {graph.structure[key]: target for key, target in source.targets.items()}
    else:  # a dense run or a plain state dict: report the set a pruner would prune by default
        targets = dict.fromkeys(p.name for p in selection.prunable_params(graph.test))
    predict = loop.program_predictor(exe, graph.test, graph.logits, scope)
    layers = {var: key for key, var in graph.structure.items()}
    return Artefact(source.kind, source.path, spec, predict, held, targets, layers, model_counts(spec, graph.test))


def model_counts(spec, program=None):
    """(FLOPs and parameters of spec's model, of the dense model before slimming or None when it was not slimmed)."""
    paddle.enable_static()

    def count(widths):
        return flops.count_program(build_test(spec["model"], spec["scale"], spec["image_size"], spec["in_channels"], spec["num_classes"], widths).test)

    return (flops.count_program(program) if program is not None else count(spec["widths"]), count(None) if spec["widths"] else None)
