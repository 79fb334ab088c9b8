"""One writer per folder: a run holds FOLDER/.lock (an flock) while it writes there, so two train.py runs on one
--model_path cannot replace each other's checkpoints.

The kernel drops an flock when its process ends, however it ends: a lock left by a killed run is simply taken
by the next one (the file still names the dead pid until then). A live holder is named by its pid. The holder
removes the file when it lets go, and a taker checks that the file it locked is still the one in the folder.
"""
import fcntl
import os

from suite.errors import ConfigError, WriteError

LOCK_FILE = ".lock"


class FolderLock:
    """This process's hold on a folder; `release()` (or leaving a `with` block) lets go."""

    def __init__(self, folder, file, created):
        self.folder, self.file, self.created = folder, file, created
        self.path = os.path.join(folder, LOCK_FILE)

    def release(self):
        if self.file.closed:
            return
        if _same_file(self.file, self.path):
            os.remove(self.path)  # before unlocking: a taker that opened this file sees it gone and takes the next
        self.file.close()
        if self.created:
            try:
                os.rmdir(self.folder)  # made for this run, which wrote nothing there
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def _same_file(file, path):
    try:
        return os.path.samestat(os.fstat(file.fileno()), os.stat(path))
    except FileNotFoundError:
        return False


def acquire(folder, flag):
    """Hold FOLDER (made if absent) for this process; a ConfigError naming the holder's pid while another process
    holds it. `flag` is how the user named the folder (`--model_path out`), for the messages."""
    created = not os.path.isdir(folder)
    path = os.path.join(folder, LOCK_FILE)
    try:
        os.makedirs(folder, exist_ok=True)
        while True:
            file = open(path, "a+")
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                file.seek(0)
                holder = file.read().strip() or "unknown"
                file.close()
                raise ConfigError(f"{flag} is in use by another run (pid {holder}, holding {path}): two runs writing one folder "
                                  f"would replace each other's checkpoints; wait for it to end, or pass another folder") from None
            if _same_file(file, path):
                break
            file.close()  # its holder removed it as we opened it: lock the one there now
        file.seek(0)
        file.truncate()
        file.write(f"{os.getpid()}\n")
        file.flush()
    except OSError as exc:
        raise WriteError(f"cannot lock {flag} ({exc.strerror or exc}); nothing was written there") from exc
    return FolderLock(folder, file, created)
