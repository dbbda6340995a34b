"""Write files so that a crash never leaves a truncated one in place: write a temporary sibling, then rename.
check_output_folder checks an output folder up front, before a long run that would only fail at its end."""
import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import IO

from errors import UserError

# The file-creation mask, read once at import: os.umask can only be read by setting it, which would race with
# threads creating files.
UMASK = os.umask(0o022)
os.umask(UMASK)


@contextlib.contextmanager
def atomic_write(path: str, mode: str = 'wb', **open_kwargs) -> Iterator[IO]:
    """Open a temporary file beside `path` for writing; on success it replaces `path`, on error it is removed.

    Raises IsADirectoryError naming `path` when a folder is in the way.
    """
    if os.path.isdir(path):
        raise IsADirectoryError(f'{path} is a folder: choose a file name')
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=folder, prefix=f'.{os.path.basename(path)}.', suffix='.tmp')
    try:
        with os.fdopen(descriptor, mode, **open_kwargs) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        # mkstemp creates the file readable by its owner only; give it the permissions open() would have.
        os.chmod(temporary, 0o666 & ~UMASK)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise


class OutputFolderError(UserError):
    """An output folder that cannot be used; the message names the flag, the folder and what to do."""


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
