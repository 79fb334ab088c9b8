"""Export a trained sparse model for deployment: a Paddle inference model, ONNX, and a compressed sparse file.

    python export.py --pruned_model output/run --output output/run_export
    python export.py --pruned_model output/run/epoch_2 --output deploy --format paddle sparse
    python export.py --pruned_model output/run --output deploy_int8 --format onnx onnx_int8 sparse_int8

Each artefact is checked before it is kept (Paddle Inference and ONNX Runtime outputs against the test
program's, the sparse file by a bit-exact round trip, INT8 models against the float ONNX model on training images
they were not calibrated on); sizes are printed against the dense float32 model.
Then `python evaluate.py --pruned_model OUTPUT` (or OUTPUT/model.onnx, OUTPUT/model.sparse.npz) evaluates
what you ship.
"""
import suite  # noqa: F401,I001 - first: prepares the process for Paddle (see suite/__init__.py)
import os
import sys

from suite import cli
from suite.artefacts import weights
from suite.deploy import export, quantize, runtimes
from suite.training.program import load_test_graph, resolve_spec
from suite.errors import ConfigError, run_cli


def parse_args(argv=None):
    p = cli.Parser(description="Export a checkpoint (or a weights file) as deployable artefacts.")
    add = p.add_argument
    add("--pruned_model", required=True, help="checkpoint folder (MODEL_PATH, .../latest, .../epoch_N), *.sparse.npz or a state-dict .pdparams")
    add("--output", required=True, help="a new folder for the artefacts (never overwritten)")
    add("--format", nargs="+", default=None, help=f"any of {' '.join(export.FORMATS)} (default: {' '.join(export.DEFAULT_FORMATS)}, those whose packages are installed)")
    add("--model", default=None, help="default: the model saved with the checkpoint (needed for a state-dict file)")
    add("--scale", type=cli.positive_float, default=None)
    add("--image_size", type=cli.positive_int, default=None)
    add("--num_classes", type=cli.positive_int, default=None)
    add("--data", default=None, help="the dataset the model was trained on (input channels, size); default: the saved one")
    add("--data_dir", default=None, help="where its training images are (INT8 calibration); default: the saved one")
    add("--calibration_images", type=cli.positive_int, default=quantize.DEFAULT_CALIBRATION_IMAGES,
        help=f"INT8 formats: calibrate on the first N training images (default {quantize.DEFAULT_CALIBRATION_IMAGES})")
    add("--calibration_method", default=quantize.DEFAULT_CALIBRATION_METHOD, choices=quantize.CALIBRATION_METHODS,
        help=f"INT8 formats: how activation ranges are chosen from them (default {quantize.DEFAULT_CALIBRATION_METHOD})")
    add("--use_gpu", type=cli.str2bool, default=None)
    return p.parse_args(argv)


def main(argv=None):
    cfg = parse_args(argv)
    formats = cfg.format or export.default_formats()
    if not cfg.format and "onnx" not in formats:
        print(f"note: not exporting ONNX: {runtimes.onnx_missing()}")
    unknown = [f for f in formats if f not in export.FORMATS]
    if unknown:
        raise ConfigError(f"--format {' '.join(unknown)} is not a format; choose from {' '.join(export.FORMATS)}")
    export.check_output(cfg.output)
    place = cli.choose_place(cfg.use_gpu)
    source = weights.read(cfg.pruned_model)
    overrides = {k: getattr(cfg, k) for k in ("model", "scale", "image_size", "num_classes", "data")}
    spec = resolve_spec(source.spec, overrides)
    export.require_packages(formats)
    calibration = None
    if set(formats) & set(export.INT8_FORMATS):
        calibration = quantize.calibration_images(spec, cfg.calibration_images, cfg.calibration_method, cfg.data_dir)
    graph, exe, scope = load_test_graph(source, spec, place)
    manifest = export.export(graph, exe, scope, spec, formats, cfg.output, source.path, source.targets, calibration,
                             progress=lambda line: print(line, flush=True))

    dense = manifest["dense_float32_bytes"]
    print(f"exported {spec['model']} x{spec['scale']} from {source.path} to {cfg.output}")
    print(f"dense float32 weights: {dense / 1e6:.3f} MB")
    for name, size in manifest["files"].items():
        print(f"  {name:<26} {size / 1e6:9.3f} MB  {size / dense:6.3f}x dense")
    for fmt, check in manifest["checks"].items():
        detail, *warnings = export.describe_check(fmt, check)
        print(f"  check {fmt}: {detail}")
        for line in warnings:
            print(line)
    first = export.FORMAT_FILES[formats[0]]
    print(f"evaluate it: python evaluate.py --pruned_model {os.path.join(cfg.output, first) if first else cfg.output}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
