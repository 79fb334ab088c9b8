"""The suite's error types and the one place that maps them to exit statuses for every command line.

Each error's message names the bad value and what would be accepted; a command line prints it as
one `error:` line and exits with the class's status. Nothing else in the suite picks exit codes.
"""
import os
import select
import sys


class SuiteError(Exception):
    """Base of the errors a command line reports as one line; `exit_status` is what it exits with."""

    exit_status = 2


class ConfigError(SuiteError, ValueError):
    """A flag has a bad value; the message names it and what is accepted."""


class DataError(SuiteError, ValueError):
    """A dataset is missing, malformed or corrupt; the message names the file and the fix."""


class CheckpointError(SuiteError, ValueError):
    """A checkpoint or weights file is missing, corrupt, or belongs to another model or IR; the message says which."""


class Diverged(SuiteError, RuntimeError):
    """The loss or the weights became NaN or Inf; training stops and the last good checkpoint is kept."""

    exit_status = 3


class WriteError(SuiteError, OSError):
    """An output (checkpoint, export, report) could not be written; what existed before is kept."""

    exit_status = 4


def run_cli(main, argv=None):
    """Call `main(argv)`; a SuiteError becomes one `error:` line on stderr and its exit status."""
    try:
        return main(argv) or 0
    except SuiteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_status
    except BrokenPipeError:
        if not _stdout_reader_gone():
            raise  # another pipe (a data loader worker, say): a real error
        # whoever read our output stopped early (`evaluate.py ... | head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the flush at exit cannot fail again
        return 141  # 128 + SIGPIPE: what a shell reports for such a writer


def _stdout_reader_gone():
    """True when stdout is a pipe whose reading end was closed."""
    if not hasattr(select, "poll"):
        return False
    poller = select.poll()
    poller.register(sys.stdout.fileno(), select.POLLOUT)
    return any(events & select.POLLERR for _, events in poller.poll(0))
