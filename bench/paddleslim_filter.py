"""The baseline the suite's channel slimming is measured against: PaddleSlim 2.6.0's L1NormFilterPruner or
FPGMFilterPruner, one uniform ratio on every convolution, chosen to keep a target fraction of the FLOPs, then
fine-tuned in dygraph on the same data, from the same start, for the same epochs as bench/recipes.py's rows.

Runs in PaddleSlim's own environment (Paddle 2.6.2, numpy<2; `bash run.sh test` makes it):

    .venv-paddleslim/bin/python bench/paddleslim_filter.py --state_dict DENSE.pdparams --method l1 --target_flops 0.5 --out DIR

Writes DIR/model.pdparams (the physically smaller model PaddleSlim leaves) and DIR/export.json with the
widths, so `python evaluate.py --pruned_model DIR/model.pdparams` and the rest of the suite read it like a
slim.py model. Prints the ratio chosen, FLOPs before and after (paddle.flops) and per-epoch test top-1.
"""
import argparse
import hashlib
import json
import math
import os
import sys
import zlib  # noqa: F401 - before Paddle: its bundled zlib otherwise crashes gzip reads

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import paddle  # noqa: E402
from paddleslim.dygraph import FPGMFilterPruner, L1NormFilterPruner  # noqa: E402

import models  # noqa: E402
from suite import data  # noqa: E402
from suite.artefacts import safe_pickle  # noqa: E402
from suite.training.loop import topk_correct  # noqa: E402

PRUNERS = {"l1": L1NormFilterPruner, "fpgm": FPGMFilterPruner}
SPEC = {"model": "mobilenet_v1", "scale": 0.25, "image_size": 28, "in_channels": 1, "num_classes": 10, "data": "fashion_mnist", "data_dir": None}


def build(state):
    net = models.create(SPEC["model"], num_classes=SPEC["num_classes"], in_channels=SPEC["in_channels"], scale=SPEC["scale"], image_size=SPEC["image_size"])
    net.set_state_dict({k: paddle.to_tensor(v) for k, v in state.items()})
    return net


def flops(net):
    return paddle.flops(net, [1, SPEC["in_channels"], SPEC["image_size"], SPEC["image_size"]])


def prune(state, method, ratio):
    """A fresh model from `state` with `ratio` of every (non-depthwise) convolution's filters removed by PaddleSlim."""
    net = build(state)
    pruner = PRUNERS[method](net, [1, SPEC["in_channels"], SPEC["image_size"], SPEC["image_size"]])
    convs = [layer.weight.name for layer in net.sublayers() if isinstance(layer, paddle.nn.Conv2D) and layer._groups == 1]
    pruner.prune_vars({name: ratio for name in convs if name not in pruner.skip_vars}, axis=0)
    return net


def uniform_ratio(state, method, target):
    """The smallest uniform ratio whose pruned model keeps at most `target` of the dense FLOPs (bisection)."""
    dense = flops(build(state))
    low, high = 0.0, 0.95
    for _ in range(12):
        middle = (low + high) / 2
        if flops(prune(state, method, middle)) <= target * dense:
            high = middle
        else:
            low = middle
    return high, dense


def evaluate(net, test_set):
    net.eval()
    top1 = top5 = 0
    with paddle.no_grad():
        for images, labels in data.batches(test_set, 500, False, drop_last=False):
            logits = net(paddle.to_tensor(images)).numpy()
            top1 += topk_correct(logits, labels, 1)
            top5 += topk_correct(logits, labels, 5)
    net.train()
    return top1 / len(test_set), top5 / len(test_set)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--state_dict", required=True)
    parser.add_argument("--method", choices=sorted(PRUNERS), required=True)
    parser.add_argument("--target_flops", type=float, required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--l2_decay", type=float, default=4e-5)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--train_subset", type=int, default=40000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    paddle.seed(args.seed)
    state = safe_pickle.load_arrays(args.state_dict)
    ratio, dense = uniform_ratio(state, args.method, args.target_flops)
    net = prune(state, args.method, ratio)
    kept = flops(net)
    print(f"PaddleSlim {PRUNERS[args.method].__name__}: uniform ratio {ratio:.4f}, FLOPs {dense:,} -> {kept:,} ({kept / dense:.3f}x)", flush=True)

    train_set = data.load_dataset(SPEC["data"], "train", subset=args.train_subset)
    test_set = data.load_dataset(SPEC["data"], "test")
    steps = data.num_batches(train_set, args.batch_size)
    schedule = paddle.optimizer.lr.CosineAnnealingDecay(args.lr, T_max=args.epochs * steps)
    optimizer = paddle.optimizer.Momentum(schedule, momentum=0.9, parameters=net.parameters(), weight_decay=paddle.regularizer.L2Decay(args.l2_decay))
    for epoch in range(args.epochs):
        for images, labels in data.batches(train_set, args.batch_size, True, args.seed, epoch):
            loss = paddle.nn.functional.cross_entropy(net(paddle.to_tensor(images)), paddle.to_tensor(labels)).mean()
            loss.backward()
            optimizer.step()
            optimizer.clear_grad()
            schedule.step()
            if not math.isfinite(float(loss)):
                sys.exit(f"loss is {float(loss)} at epoch {epoch}")
        top1, top5 = evaluate(net, test_set)
        print(f"epoch {epoch}: test top1 {top1:.4f} top5 {top5:.4f}", flush=True)

    os.makedirs(args.out, exist_ok=True)
    weights = {key: value.numpy() for key, value in net.state_dict().items() if key in state}  # not PaddleSlim's *_backup copies
    dense_shapes = {key: value.shape for key, value in state.items()}
    widths = {key: list(value.shape) for key, value in weights.items() if key.endswith(".weight") and value.shape != dense_shapes[key]}
    state_dict = os.path.join(args.out, "model.pdparams")
    paddle.save(weights, state_dict, protocol=4)
    with open(state_dict, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    manifest = {"spec": {**SPEC, "widths": widths}, "targets": {}, "structure": {},
                "files": {"model.pdparams": os.path.getsize(state_dict)}, "sha256": {"model.pdparams": digest},
                "paddleslim": {"method": args.method, "uniform_ratio": ratio, "flops": [int(dense), int(kept)], "top1": top1, "top5": top5}}
    with open(os.path.join(args.out, "export.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print(f"wrote {args.out}/model.pdparams ({kept / dense:.3f}x FLOPs, test top1 {top1:.4f})")


if __name__ == "__main__":
    main()
