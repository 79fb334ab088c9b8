"""Progress output: console lines (rank 0 unless asked), VisualDL scalars, and a PNG of the run's curves."""
import json
import os
import sys
import time


class RunLog:
    """Prints progress lines and records scalars; only rank 0 writes files."""

    def __init__(self, log_dir=None, rank=0):
        self.rank = rank
        self._writer = None
        if log_dir and rank == 0:
            try:
                from visualdl import LogWriter
            except ImportError:
                self.line(f"note: visualdl is not installed, so no scalars are written to {log_dir} (pip install visualdl)")
            else:
                self._writer = LogWriter(logdir=log_dir)

    def line(self, text):
        prefix = "" if self.rank == 0 else f"[rank {self.rank}] "
        print(f"{time.strftime('%H:%M:%S')} {prefix}{text}", file=sys.stdout, flush=True)

    def scalars(self, step, values):
        if self._writer:
            for tag, value in values.items():
                self._writer.add_scalar(tag=tag, step=step, value=value)

    def close(self):
        if self._writer:
            self._writer.close()


def plot_history(history, path):
    """Test accuracy and sparsity per epoch as a PNG; returns the path, or None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    epochs = [h["epoch"] + 1 for h in history]
    fig, left = plt.subplots(figsize=(7, 4))
    left.set_xticks(epochs)
    left.plot(epochs, [100 * h["top1"] for h in history], "o-", label="test top-1")
    left.plot(epochs, [100 * h["top5"] for h in history], "s--", label="test top-5")
    left.set_xlabel("epochs trained")
    left.set_ylabel("accuracy (%)")
    right = left.twinx()
    right.plot(epochs, [100 * h["pruned_sparsity"] for h in history], "r^-", label="pruned-set sparsity")
    right.set_ylabel("sparsity (%)")
    right.set_ylim(0, 100)
    lines = left.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    labels = left.get_legend_handles_labels()[1] + right.get_legend_handles_labels()[1]
    left.legend(lines, labels, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    with open(os.path.splitext(path)[0] + ".json", "w") as f:
        json.dump(history, f, indent=1)
    return path
