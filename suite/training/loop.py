"""One epoch of training and one pass of evaluation; the pruner steps after every update."""
import math
import time

import numpy as np

from suite.errors import Diverged


def topk_correct(logits, labels, k):
    """How many rows have their label among the k largest logits."""
    k = min(k, logits.shape[1])
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return int((top == labels.reshape(-1, 1)).any(axis=1).sum())


def train_epoch(exe, graph, batches, epoch, steps_per_epoch, log, log_period, sparsity_report, curve, eta):
    """Run one epoch; each progress line also appends {step, loss, top1, sparsity, lr} to `curve`.

    `sparsity_report()` (report.summary of the current weights) feeds each progress line; the same
    read checks the weights are finite, at every line and so at the epoch's last step, before any checkpoint.
    `eta` (a log.Eta over the run's steps) shows on each line the time left to the run's end.
    """
    window = {"loss": 0.0, "top1": 0, "top5": 0, "seen": 0, "read": 0.0, "batch": 0.0, "steps": 0}
    tick = time.perf_counter()
    for step, (images, labels) in enumerate(batches, start=1):
        read = time.perf_counter() - tick
        loss, logits = exe.run(graph.main, feed={"image": images, "label": labels}, fetch_list=[graph.loss, graph.logits])
        loss = float(np.asarray(loss).reshape(-1)[0])
        if not math.isfinite(loss):
            raise Diverged(f"loss is {loss} at epoch {epoch}, batch {step}: lower --lr or check the data; the last good checkpoint is kept")
        if graph.pruner:
            try:
                graph.pruner.step()
            except FloatingPointError as exc:
                raise Diverged(f"{exc} (epoch {epoch}, batch {step}); the last good checkpoint is kept") from exc
        lr = graph.lr.get_lr()
        graph.lr.step()
        window["loss"] += loss
        window["top1"] += topk_correct(logits, labels, 1)
        window["top5"] += topk_correct(logits, labels, 5)
        window["seen"] += len(labels)
        window["read"] += read
        window["batch"] += time.perf_counter() - tick
        window["steps"] += 1
        if step % log_period == 0 or step == steps_per_epoch:
            n, seen = window["steps"], window["seen"]
            report = sparsity_report()
            if report["nonfinite"]:
                raise Diverged(
                    f"weights of {report['nonfinite'][0]} are not finite at epoch {epoch}, batch {step}: training diverged; "
                    "lower --lr or check the data; the last good checkpoint is kept"
                )
            sparsity = report["pruned"]
            global_step = epoch * steps_per_epoch + step
            log.line(
                f"epoch {epoch} batch {step}/{steps_per_epoch} lr {lr:.5f} loss {window['loss'] / n:.4f} "
                f"top1 {window['top1'] / seen:.4f} top5 {window['top5'] / seen:.4f} sparsity {sparsity:.4f} "
                f"reader {window['read'] / n:.3f}s batch {window['batch'] / n:.3f}s {seen / window['batch']:.1f} images/s "
                f"{eta.update(global_step)}"
            )
            point = {"step": global_step, "loss": window["loss"] / n, "top1": window["top1"] / seen, "sparsity": sparsity, "lr": lr}
            curve.append(point)
            log.scalars(global_step, {"train/loss": point["loss"], "train/acc_top1": point["top1"], "train/lr": lr, "train/sparsity": sparsity})
            window = dict.fromkeys(window, 0)
        tick = time.perf_counter()


def program_predictor(exe, program, logits_var, scope=None):
    """predict(images) -> logits with a static test program."""
    return lambda images: exe.run(program, feed={"image": images}, fetch_list=[logits_var], scope=scope)[0]


def evaluate(predict, batches, progress=None):
    """Top-1 and top-5 accuracy and the sample count over all batches, with predict(images) -> logits;
    `progress(batches done)` is called after each batch, if given."""
    top1 = top5 = seen = 0
    for done, (images, labels) in enumerate(batches, start=1):
        logits = np.asarray(predict(images))
        top1 += topk_correct(logits, labels, 1)
        top5 += topk_correct(logits, labels, 5)
        seen += len(labels)
        if progress:
            progress(done)
    return {"top1": top1 / max(seen, 1), "top5": top5 / max(seen, 1), "samples": seen}
