"""Progress output: console lines (rank 0 unless asked) and VisualDL scalars."""
import sys
import time

from suite.errors import WriteError


def duration(seconds):
    """'45s', '12m05s' or '3h07m': a time span as progress lines show it."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"


class Eta:
    """The time left for `total` units of work (steps, batches, layers, formats) at the pace since it was made,
    when `already` of them were done (a resumed run); every progress line of the suite shows one."""

    def __init__(self, total, already=0):
        self.total, self.already, self.start = total, already, time.perf_counter()

    def update(self, done):
        """'ETA 3m05s' once `done` of the units are done."""
        if done <= self.already:
            return "ETA unknown"
        pace = (time.perf_counter() - self.start) / (done - self.already)
        return f"ETA {duration(pace * max(0, self.total - done))}"


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
                try:
                    self._writer = LogWriter(logdir=log_dir)
                except OSError as exc:
                    raise WriteError(f"could not make --log_dir {log_dir} ({exc.strerror or exc}); pass a folder that can be written") from exc

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
