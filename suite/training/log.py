"""Progress output: console lines (rank 0 unless asked) and VisualDL scalars."""
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
