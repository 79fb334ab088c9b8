"""PNG figures people would rather look at than read: training curves, per-layer sparsity, weight histograms.

matplotlib is optional: without it every function returns None and the caller says so.
"""
import math

import numpy as np

from suite.artefacts.staging import staged_file


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _save(plt, fig, path, dpi):
    """Write the figure as a PNG at PATH through a staged file (a full disk leaves the old PNG or none); close it."""
    try:
        with staged_file(path, "the plot") as staged:
            fig.savefig(staged, dpi=dpi, format="png")
    finally:
        plt.close(fig)
    return path


def _below_title(fig, title_inches=0.55):
    """tight_layout's rect keeping a two-line suptitle clear of the panels' own titles."""
    return (0, 0, 1, 1 - title_inches / fig.get_figheight())


def training_curves(curve, history, path):
    """Loss, accuracy and sparsity against the optimizer step: `curve` rows come from progress lines
    ({step, loss, top1, sparsity}), `history` rows from test evaluations ({epoch, step, top1})."""
    plt = _pyplot()
    if plt is None or not curve:
        return None
    steps = [row["step"] for row in curve]
    fig, (loss_ax, acc_ax, sparsity_ax) = plt.subplots(3, 1, figsize=(8, 7.5), sharex=True)
    loss_ax.plot(steps, [row["loss"] for row in curve], color="tab:blue")
    loss_ax.set_ylabel("train loss")
    acc_ax.plot(steps, [100 * row["top1"] for row in curve], color="tab:blue", label="train top-1 (window)")
    tested = [h for h in history if "step" in h]
    acc_ax.plot([h["step"] for h in tested], [100 * h["top1"] for h in tested], "o", color="tab:orange", label="test top-1")
    acc_ax.set_ylabel("accuracy (%)")
    acc_ax.legend(loc="lower right")
    sparsity_ax.plot(steps, [100 * row["sparsity"] for row in curve], color="tab:red")
    sparsity_ax.set_ylabel("pruned-set sparsity (%)")
    sparsity_ax.set_ylim(-2, 102)
    sparsity_ax.set_xlabel("optimizer step")
    for ax in (loss_ax, acc_ax, sparsity_ax):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(plt, fig, path, dpi=100)


def layer_sparsity(rows, path, title):
    """Horizontal bars of each layer's sparsity (rows: {name, layer, sparsity, pruned, target?}); targets as ticks."""
    plt = _pyplot()
    if plt is None:
        return None
    rows = [r for r in rows if len(r["shape"]) > 1]  # weights, not biases or BN vectors
    labels = [r["layer"] or r["name"] for r in rows]
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.26 * len(rows)))
    y = np.arange(len(rows))
    colors = ["tab:red" if r["pruned"] else "tab:gray" for r in rows]
    ax.barh(y, [100 * r["sparsity"] for r in rows], color=colors, height=0.7, label="achieved")
    targets = [(i, r["target"]) for i, r in enumerate(rows) if r.get("target") is not None]
    if targets:
        ax.plot([100 * t for _, t in targets], [i for i, _ in targets], "|", color="black", markersize=14, mew=2, label="target")
        ax.legend(loc="lower right")
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("sparsity (%)   red: pruned, grey: left dense")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _save(plt, fig, path, dpi=100)


def weight_histograms(weights, path, title, bins=60, columns=4):
    """One histogram per pruned weight ({label: array}): the non-zero values, the dashed lines at the smallest
    kept magnitude (the threshold the pruner left), and the share of exact zeros in the title."""
    plt = _pyplot()
    if plt is None or not weights:
        return None
    rows = math.ceil(len(weights) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.1 * rows + 0.6), squeeze=False)
    for ax, (label, w) in zip(axes.flat, weights.items()):
        values = w.reshape(-1)
        kept = values[values != 0]
        ax.hist(kept, bins=bins, color="tab:blue")
        if kept.size and kept.size < values.size:
            edge = float(np.abs(kept).min())
            for x in (-edge, edge):
                ax.axvline(x, color="tab:red", linestyle="--", linewidth=1)
        ax.set_title(f"{label}\n{1 - kept.size / values.size:.0%} zero of {values.size:,}", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(weights):]:
        ax.axis("off")
    fig.suptitle(f"{title}\nnon-zero weights; dashed: the smallest kept |w|", fontsize=10)
    fig.tight_layout(rect=_below_title(fig))
    return _save(plt, fig, path, dpi=90)


def sensitivity_curves(points, dense_top1, path, title, proposed=None, columns=4, unit="weights"):
    """One small panel per parameter: top-1 against the ratio it alone was pruned to, the dense top-1 as a
    dashed line, and the proposed ratio (if any) as a red dotted line; points are sensitivity.Point rows, whose
    size counts `unit` (weights, or a channel group's channels)."""
    plt = _pyplot()
    if plt is None or not points:
        return None
    by_layer = {}
    for p in points:
        by_layer.setdefault(p.parameter, []).append(p)
    rows = math.ceil(len(by_layer) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.3 * columns, 2.0 * rows + 0.8), sharex=True, sharey=True, squeeze=False)
    low = min(min(p.top1 for p in points), dense_top1)
    for ax, (name, curve) in zip(axes.flat, by_layer.items()):
        ax.plot([0] + [p.ratio for p in curve], [100 * dense_top1] + [100 * p.top1 for p in curve], "o-", color="tab:blue", markersize=3)
        ax.axhline(100 * dense_top1, color="gray", linestyle="--", linewidth=1)
        if proposed and name in proposed:
            ax.axvline(proposed[name], color="tab:red", linestyle=":", linewidth=1.5)
        ax.set_title(f"{curve[0].layer or name} ({curve[0].size:,} {unit})", fontsize=8)
        ax.set_ylim(max(0, 100 * low - 5), 100 * dense_top1 + 3)
        ax.tick_params(labelsize=7, labelbottom=True)
        ax.set_xlim(-0.03, 1.0)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(by_layer):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("top-1 (%)", fontsize=8)
    fig.supxlabel("ratio of the layer pruned", fontsize=9)
    note = "; red dotted: proposed ratio" if proposed else ""
    fig.suptitle(f"{title}\neach layer pruned alone, no training; dashed: dense top-1{note}", fontsize=10)
    fig.tight_layout(rect=_below_title(fig))
    return _save(plt, fig, path, dpi=90)
