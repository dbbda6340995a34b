"""Write files so that a crash never leaves a truncated one in place: write a temporary sibling, then rename.
check_output_folder checks an output folder up front, before a long run that would only fail at its end."""
import contextlib
import errno
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator, Mapping
from typing import IO

from errors import UserError

# The file-creation mask, read once at import: os.umask can only be read by setting it, which would race with
# threads creating files.
UMASK = os.umask(0o022)
os.umask(UMASK)

# A temporary left by a killed writer is removed by the next atomic_write of the same file: at once when its
# writer ran on this machine and is gone, after a day otherwise (its process may be alive on another machine that
# shares the folder).
STALE_AFTER_SECONDS = 24 * 3600
HOST = socket.gethostname()
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
UNWRITABLE_ERRNOS = (errno.EROFS, errno.EACCES, errno.EPERM)
NEARLY_FULL_BYTES = 1 << 20


@contextlib.contextmanager
def atomic_write(path: str, mode: str = 'wb', **open_kwargs) -> Iterator[IO]:
    """Open a temporary file beside `path` for writing; on success it replaces `path`, on error it is removed.

    The temporary is named .<name>.<pid>@<host>.<random>.tmp; stale ones of earlier writers of `path` are removed
    first. Raises IsADirectoryError naming `path` when a folder is in the way, and OutputFolderError naming the
    folder when its disk is full or it cannot be written (a file system turned read-only, no permission).
    """
    if os.path.isdir(path):
        raise IsADirectoryError(f'{path} is a folder: choose a file name')
    folder, name = os.path.split(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        remove_stale_temporaries(folder, name)
        descriptor, temporary = tempfile.mkstemp(dir=folder, prefix=f'.{name}.{os.getpid()}@{HOST}.', suffix='.tmp')
    except OSError as error:
        raise folder_error(folder, name, error) from None
    try:
        with os.fdopen(descriptor, mode, **open_kwargs) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        # mkstemp creates the file readable by its owner only; give it the permissions open() would have.
        os.chmod(temporary, 0o666 & ~UMASK)
        os.replace(temporary, path)
    except BaseException as error:
        # Asked before the removal frees the space the temporary took. An OutputFolderError comes from a nested
        # atomic_write (write_together) and already names the file that found the disk full.
        full = not isinstance(error, OutputFolderError) and disk_full(folder, error)
        with contextlib.suppress(OSError):  # gone, or the file system turned read-only meanwhile
            os.remove(temporary)
        if full:
            raise folder_error(folder, name, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))) from None
        if isinstance(error, OSError) and error.errno in UNWRITABLE_ERRNOS:
            raise folder_error(folder, name, error) from None
        raise


def folder_error(folder: str, name: str, error: OSError) -> 'OutputFolderError':
    """The OutputFolderError of `error`, raised while writing the file `name` into `folder`."""
    if error.errno in DISK_FULL_ERRNOS:
        return OutputFolderError(f'{folder}: the disk is full, so {name} cannot be written; free some space there or '
                                 f'choose another folder', reason='the disk is full')
    return OutputFolderError(f'{folder}: {name} cannot be written ({error.strerror}); make the folder writable or '
                             f'choose another', reason=error.strerror)


def disk_full(folder: str, error: BaseException) -> bool:
    """Whether `error`, raised while writing into `folder`, comes from a full disk (or quota): an OSError ENOSPC or
    EDQUOT, itself or as the context of another error (torch.save reports it as a RuntimeError), or a RuntimeError
    while less than 1 MiB is free there."""
    cause = error
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno in DISK_FULL_ERRNOS:
            return True
        cause = cause.__cause__ or cause.__context__
    if not isinstance(error, RuntimeError):
        return False
    try:
        return shutil.disk_usage(folder).free < NEARLY_FULL_BYTES
    except OSError:  # the folder is gone: whatever happened, it is not for this check to say
        return False


def remove_stale_temporaries(folder: str, name: str) -> None:
    """Remove the temporaries of `name` in `folder` that killed writers left: those of a process of this machine
    that is gone, and any not modified for STALE_AFTER_SECONDS (also those of the older .<name>.<random>.tmp
    naming). Another live process's temporary is kept."""
    pattern = re.compile(rf'\.{re.escape(name)}\.(?:(\d+)@(.+)\.)?[a-z0-9_]+\.tmp')
    prefix = f'.{name}.'
    for entry in os.scandir(folder):
        match = entry.name.startswith(prefix) and pattern.fullmatch(entry.name)
        if not match:
            continue
        pid, host = match.groups()
        with contextlib.suppress(OSError):  # another writer may remove it first
            dead = pid is not None and host == HOST and not process_alive(int(pid))
            if dead or time.time() - entry.stat().st_mtime > STALE_AFTER_SECONDS:
                os.remove(entry.path)


def process_alive(pid: int) -> bool:
    """Whether a process `pid` runs on this machine (one of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's
        pass
    return True


def write_together(contents: Mapping[str, bytes]) -> None:
    """Write several files, {path: bytes}, so that they replace their earlier versions together or not at all
    (e.g. one result in two formats): each is written and synced to its temporary first, the renames come last."""
    with contextlib.ExitStack() as stack:
        for path, data in contents.items():
            file = stack.enter_context(atomic_write(path))
            file.write(data)
            file.flush()
            os.fsync(file.fileno())


class OutputFolderError(UserError):
    """An output folder that cannot be used; the message names the flag, the folder and what to do, `reason` the
    cause in a few words."""

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = reason or message


def check_output_folder(path: str, flag: str) -> None:
    """OutputFolderError unless the folder `path` given by the command-line option `flag` exists and is writable,
    or can be created: its nearest existing ancestor is a writable folder. Creates nothing, so that a run failing
    later leaves no empty folder behind; the writers create it (atomic_write does)."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise OutputFolderError(f'{flag} {path} is a file: choose a folder')
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise OutputFolderError(f'{flag} {path}: {existing} is a file, so the folder cannot be made there; '
                                f'choose another place')
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputFolderError(f'{flag} {path}: {existing} is not writable; choose a writable folder')
