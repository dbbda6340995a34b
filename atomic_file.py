"""Write files so that a crash never leaves a truncated one in place: write a temporary sibling, then rename.
make_output_folder checks an output folder up front, before a long run that would only fail at its end."""
import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import IO

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


class OutputFolderError(ValueError):
    """An output folder that cannot be used; the message names the flag, the folder and what to do."""


def make_output_folder(path: str, flag: str) -> None:
    """Create the folder `path` given by the command-line option `flag` (and its parents), or raise
    OutputFolderError: a file in the way, a parent that is a file, no permission."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise OutputFolderError(f'{flag} {path} is a file: choose a folder')
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise OutputFolderError(f'{flag} {path}: cannot write there ({error.strerror}); choose a writable folder') \
            from None
