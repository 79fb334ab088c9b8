"""Evaluate a saved sparse model: top-1/top-5, sparsity of the whole model and of the pruned set, per layer.

    python evaluate.py --pruned_model output/latest
    python evaluate.py --pruned_model output/epoch_9 --data fashion_mnist --model MobileNet --scale 0.25 --json eval.json

Model and data flags default to the ones saved with the checkpoint.
"""
import suite  # noqa: F401,I001 - first: prepares the process for Paddle (see suite/__init__.py)
import json
import sys

import paddle
from paddle.utils import unique_name

from sparsity import report, selection, static
from suite import checkpoint, config, data, loop, program
from suite.errors import ConfigError, WriteError, run_cli


def parse_args(argv=None):
    p = config.Parser(description="Evaluate a checkpoint written by train.py.")
    add = p.add_argument
    add("--pruned_model", required=True, help="checkpoint folder (MODEL_PATH/epoch_N or MODEL_PATH/latest) or MODEL_PATH")
    add("--data", default=None, help="default: the checkpoint's dataset")
    add("--data_dir", default=None)
    add("--model", default=None, help="default: the checkpoint's model")
    add("--scale", type=float, default=None)
    add("--image_size", type=int, default=None)
    add("--batch_size", type=int, default=256)
    add("--test_subset", type=int, default=None, help="evaluate only the first N test samples")
    add("--num_workers", type=int, default=2)
    add("--use_gpu", type=config.str2bool, default=None)
    add("--json", default=None, help="also write the results to this JSON file")
    return p.parse_args(argv)


def evaluate(cfg):
    if cfg.batch_size < 1:
        raise ConfigError(f"--batch_size {cfg.batch_size} must be >= 1")
    folder = checkpoint.resolve(cfg.pruned_model)
    state = checkpoint.verify(folder)
    saved = state["flags"]
    if cfg.data is None and cfg.data_dir is None:  # the saved folder belongs to the saved dataset only
        cfg.data_dir = saved.get("data_dir")
    for name in ("data", "model", "scale", "image_size"):
        if getattr(cfg, name) is None:
            setattr(cfg, name, saved.get(name))
    if cfg.data not in data.DATASETS:
        raise ConfigError(f"--data {cfg.data!r} is not a known dataset; choose one of {', '.join(sorted(data.DATASETS))}")
    info = data.DATASETS[cfg.data]
    test_set = data.load_dataset(cfg.data, "test", cfg.data_dir, cfg.image_size, cfg.test_subset)
    num_classes = state.get("num_classes") or getattr(test_set, "num_classes", info.num_classes)
    place = config.choose_place(cfg.use_gpu)

    paddle.enable_static()
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup), unique_name.guard():
        try:
            _, _, logits = program.forward(cfg.model, cfg.scale, cfg.image_size, info.in_channels, num_classes)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        test, test_logits = program.clone_for_test(main, logits)
    params = selection.model_params(main)
    values = checkpoint.read_persistables(folder)
    weights = checkpoint.check_compatible(values, {p.name: p.shape for p in params}, folder)
    exe = paddle.static.Executor(place)
    exe.run(startup)
    scope = paddle.static.global_scope()
    for name, value in weights.items():
        static.write(scope, name, value, place)

    # the pruned set is what had masks during training; a dense checkpoint reports the default set
    pruned = [p.name for p in params if static.mask_name(p.name) in values]
    if not pruned:
        pruned = [p.name for p in selection.prunable_params(main)]
    sparsity = report.summary(scope, params, pruned)
    batches = data.batches(test_set, cfg.batch_size, False, drop_last=False, num_workers=cfg.num_workers)
    accuracy = loop.evaluate(exe, test, test_logits, batches)
    return {
        "checkpoint": folder,
        "model": cfg.model,
        "scale": cfg.scale,
        "data": cfg.data,
        "top1": accuracy["top1"],
        "top5": accuracy["top5"],
        "samples": accuracy["samples"],
        "model_sparsity": sparsity["model"],
        "pruned_sparsity": sparsity["pruned"],
        "layers": sparsity["layers"],
    }


def print_report(result):
    print(f"checkpoint {result['checkpoint']}: {result['model']} x{result['scale']} on {result['data']} ({result['samples']} test samples)")
    print(f"top1 {result['top1']:.4f}  top5 {result['top5']:.4f}")
    print(f"sparsity: whole model {result['model_sparsity']:.4f}, pruned set {result['pruned_sparsity']:.4f}")
    width = max(len(r["name"]) for r in result["layers"])
    print(f"{'layer':<{width}}  {'shape':<18} {'size':>9} {'sparsity':>9}  pruned")
    for r in result["layers"]:
        shape = "x".join(map(str, r["shape"]))
        print(f"{r['name']:<{width}}  {shape:<18} {r['size']:>9} {r['sparsity']:>9.4f}  {'yes' if r['pruned'] else 'no'}")


def main(argv=None):
    cfg = parse_args(argv)
    result = evaluate(cfg)
    print_report(result)
    if cfg.json:
        try:
            with open(cfg.json, "w") as f:
                json.dump(result, f, indent=1)
        except OSError as exc:
            raise WriteError(f"could not write --json {cfg.json}: {exc}") from exc


if __name__ == "__main__":
    sys.exit(run_cli(main))
