"""A script's inputs are never its outputs: the paths a run writes, replaces or deletes are checked against the
files and folders it reads, as the file system sees them (another spelling, a symbolic or a hard link)."""
import os
from collections.abc import Iterable, Mapping

from errors import UserError


class InputOverwriteError(UserError):
    """An output that is one of the run's inputs, or holds one: the message names the flag, both paths and what to
    do."""


def same_path(path: str, other: str) -> bool:
    """Whether `path` and `other` name the same file or folder."""
    if os.path.realpath(path) == os.path.realpath(other):
        return True
    try:
        return os.path.samefile(path, other)
    except OSError:  # one of them does not exist (yet)
        return False


def inside(path: str, folder: str) -> bool:
    """Whether `path` lies somewhere inside the folder `folder` (not `folder` itself)."""
    real_folder = os.path.realpath(folder)
    return os.path.realpath(path).startswith(real_folder.rstrip(os.sep) + os.sep)


def refuse_outputs_over_inputs(inputs: Mapping[str, str | None], outputs: Iterable[str], advice: str) -> None:
    """InputOverwriteError when a path the run writes, replaces or deletes (`outputs`: files, or folders with all
    they hold) is one of its inputs ({flag: path}; None: not given; one that does not exist is left to the reader
    of the input to report) or a folder holding one; the message ends with `advice`."""
    outputs = list(outputs)
    for flag, source in inputs.items():
        for output in outputs if source and os.path.lexists(source) else ():
            if same_path(source, output):
                raise InputOverwriteError(f'{flag} {source} is also an output of this run ({output}), which would '
                                          f'overwrite it: {advice}')
            if inside(source, output):
                raise InputOverwriteError(f'{flag} {source} lies inside {output}, which this run replaces: {advice}')
