"""Export a trained sparse model for deployment: a Paddle inference model, ONNX, and a compressed sparse file.

    python export.py --pruned_model output/run --output output/run_export
    python export.py --pruned_model output/run/epoch_2 --output deploy --format paddle sparse

Each artefact is checked before it is kept (Paddle Inference and ONNX Runtime outputs against the test
program's, the sparse file by a bit-exact round trip); sizes are printed against the dense float32 model.
Then `python evaluate.py --pruned_model OUTPUT` (or OUTPUT/model.onnx, OUTPUT/model.sparse.npz) evaluates
what you ship.
"""
import suite  # noqa: F401,I001 - first: prepares the process for Paddle (see suite/__init__.py)
import sys

from suite import cli
from suite.artefacts import weights
from suite.deploy import export, runtimes
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
    graph, exe, scope = load_test_graph(source, spec, place)
    manifest = export.export(graph, exe, scope, spec, formats, cfg.output, source.path, source.targets, progress=lambda line: print(line, flush=True))

    dense = manifest["dense_float32_bytes"]
    print(f"exported {spec['model']} x{spec['scale']} from {source.path} to {cfg.output}")
    print(f"dense float32 weights: {dense / 1e6:.3f} MB")
    for name, size in manifest["files"].items():
        print(f"  {name:<22} {size / 1e6:9.3f} MB  {size / dense:6.3f}x dense")
    for fmt, check in manifest["checks"].items():
        detail = f"max |difference| {check['max_abs_diff']:.2e} from the test program" if isinstance(check, dict) else check
        print(f"  check {fmt}: {detail}")
    first = {"paddle": "", "onnx": "/" + export.ONNX_FILE, "sparse": "/" + export.SPARSE_FILE, "state_dict": "/" + export.STATE_DICT_FILE}[formats[0]]
    print(f"evaluate it: python evaluate.py --pruned_model {cfg.output}{first}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
