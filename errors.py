"""The one error type users see: a problem with their input, flags, files or machine, not a bug; and how a
script's main() ends on one, or on Ctrl-C or SIGTERM.

Helpers raise a UserError (or one of its kinds: CheckpointError, DatasetError, DeviceError, ...) whose message
names the flag or file and says what to do; each script's main() prints it as one line `error: ...` and exits with
status 1 (run_main does it). Anything else is a bug and keeps its traceback.
"""
import signal
import sys
from collections.abc import Callable


class UserError(Exception):
    """A problem the user can fix; the message names the flag or file and what to do."""


class Interrupted(KeyboardInterrupt):
    """Raised by SIGTERM in the main thread, as Python raises KeyboardInterrupt for SIGINT (Ctrl-C), so that the
    same cleanup (finally clauses, removed temporaries) runs for both; signum is the signal's number."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def raise_interrupted(signum: int, frame) -> None:
    raise Interrupted(signum)


def leave_stop_signals_to_the_main_process(worker_id: int) -> None:
    """A DataLoader worker_init_fn: workers ignore SIGINT and SIGTERM, which a Ctrl-C or a kill of the process group
    sends them too, so that the main process alone decides how to stop (a worker killed first would end it with a
    DataLoader error instead)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def run_main(body: Callable[[], None], interrupted: str) -> None:
    """Run a script's work as its main(): a UserError ends it with one line `error: ...` and status 1; Ctrl-C
    (SIGINT) or SIGTERM ends it, once the work's own cleanup has run, with one line `interrupted: <interrupted>`
    and status 130 or 143 (128 + the signal's number, as shells report a process a signal ended), no traceback."""
    previous = signal.signal(signal.SIGTERM, raise_interrupted)
    try:
        body()
    except UserError as error:
        sys.exit(f'error: {error}')
    except KeyboardInterrupt as interruption:
        print(f'interrupted: {interrupted}', file=sys.stderr)
        sys.exit(128 + getattr(interruption, 'signum', signal.SIGINT))
    finally:
        signal.signal(signal.SIGTERM, previous)
