"""Training checkpoints: writing, reading, listing and pruning them, and the random states they carry.

A checkpoint is <checkpoint-dir>/epoch-E-iter-S.pth (S counts all steps), a dict of
    model, optimizer, scaler (GradScaler; empty without CUDA AMP), epoch, step, batch_in_epoch,
    args (train.py's flags), backbone, architecture ('MattingBase', or 'MattingRefine' with refiner.* weights: train.py
    --model-refine), random_states (torch, numpy, python, and cuda where present)
written atomically, so that a crash never leaves a truncated one; read_checkpoint refuses one whose bytes no longer
match the CRC-32 that torch.save stored with each tensor (changed_record). Bare state dicts (the original
project's, BackgroundMattingV2's) are read too: model/utils.py loads the weights of either.
"""
import argparse
import contextlib
import errno
import glob
import os
import pickle
import random
import re
import tempfile
import time
import zipfile
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from atomic_file import HOST, atomic_write, process_alive, remove_stale_temporaries
from errors import UserError

CHECKPOINT_NAME = re.compile(r'epoch-(\d+)-iter-(\d+)\.pth$')
# A lock file that is still empty this long after it was made is a crashed process's, not one being written.
EMPTY_LOCK_SECONDS = 60
STALE_TAKEOVER_SECONDS = 10
NO_HARD_LINKS = (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS)


class CheckpointError(UserError):
    """A checkpoint file that is missing, unreadable or made for another model."""


def save_checkpoint(folder: str, model: nn.Module, optimizer: torch.optim.Optimizer, scaler, args: argparse.Namespace,
                    epoch: int, step: int, batch_in_epoch: int) -> str:
    """Write everything needed to continue training exactly, atomically, as <folder>/epoch-E-iter-S.pth; returns
    the path."""
    path = os.path.join(folder, f'epoch-{epoch}-iter-{step}.pth')
    checkpoint = {'model': model.state_dict(), 'optimizer': optimizer.state_dict(), 'scaler': scaler.state_dict(),
                  'epoch': epoch, 'step': step, 'batch_in_epoch': batch_in_epoch, 'args': vars(args),
                  'backbone': args.model_backbone, 'architecture': type(model).__name__,
                  'random_states': random_states()}
    with atomic_write(path) as file:
        torch.save(checkpoint, file)
    return path


def read_checkpoint(path: str) -> dict:
    """torch.load a checkpoint file onto the CPU, with one clear CheckpointError for a missing or corrupt file."""
    if not os.path.isfile(path):
        raise CheckpointError(f'checkpoint {path} does not exist: check the path')
    try:
        checkpoint = torch.load(path, map_location='cpu', weights_only=False)
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, pickle.UnpicklingError) as error:
        raise CheckpointError(f'checkpoint {path} is corrupt or truncated ({type(error).__name__}): '
                              f'use another checkpoint or re-save it') from None
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f'checkpoint {path} holds a {type(checkpoint).__name__}, not a state dict')
    changed = changed_record(path)
    if changed is not None:
        raise CheckpointError(f'checkpoint {path} is corrupt: the bytes of its record {changed} no longer match the '
                              f'CRC-32 saved with them, so the file changed after it was written; use another '
                              f'checkpoint')
    return checkpoint


def changed_record(path: str) -> str | None:
    """The first record (a tensor's storage, or the pickle that holds them) of the checkpoint `path` whose bytes no
    longer match the CRC-32 that torch.save stored with it; None when all match, or for a file in torch's legacy
    (non-zip) format. torch.load does not check them, so a checkpoint whose bytes changed on disk would load and run
    or train on wrong numbers. A checkpoint edited on purpose (torch.load, then torch.save) has new CRCs and passes."""
    if not zipfile.is_zipfile(path):
        return None
    with zipfile.ZipFile(path) as archive:
        for entry in archive.infolist():
            if entry.CRC == 0:  # empty, or saved without CRCs (torch.serialization.config.save.compute_crc32)
                continue
            try:
                with archive.open(entry) as record:
                    while record.read(1 << 24):  # zipfile checks the CRC-32 at the record's end
                        pass
            except (zipfile.BadZipFile, ValueError, EOFError):  # a bad CRC, or a record header torch.load skips
                return entry.filename
    return None


def is_training_checkpoint(checkpoint: Mapping) -> bool:
    """Whether `checkpoint` is one save_checkpoint wrote (training continues from it), not a bare state dict."""
    return 'optimizer' in checkpoint


def checkpoints_oldest_first(folder: str) -> list[str]:
    """The epoch-E-iter-S.pth files of `folder`, ordered by epoch, then step."""
    found = sorted((tuple(int(number) for number in CHECKPOINT_NAME.search(path).groups()), path)
                   for path in glob.glob(os.path.join(folder, '*.pth')) if CHECKPOINT_NAME.search(path))
    return [path for _, path in found]


def newest_checkpoint(folder: str) -> str | None:
    """The newest checkpoint in `folder`, or None."""
    found = checkpoints_oldest_first(folder)
    return found[-1] if found else None


def step_of(path: str) -> int:
    """The step S of a checkpoint named epoch-E-iter-S.pth."""
    return int(CHECKPOINT_NAME.search(path)[2])


def remove_old_checkpoints(folder: str, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints of `folder`."""
    for path in checkpoints_oldest_first(folder)[:-keep]:
        os.remove(path)


def random_states() -> dict:
    """The states of every random generator training draws from, to continue it exactly."""
    states = {'torch': torch.get_rng_state(), 'numpy': np.random.get_state(), 'python': random.getstate()}
    if torch.cuda.is_available():
        states['cuda'] = torch.cuda.get_rng_state_all()
    return states


def set_random_states(states: dict) -> None:
    torch.set_rng_state(states['torch'])
    np.random.set_state(states['numpy'])
    random.setstate(states['python'])
    if 'cuda' in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states['cuda'])


def recorded_setting(checkpoint: Mapping, name: str, given, default, source: str):
    """The value of train.py's setting `name` (its flag's dest) for a model from `checkpoint`: the value a training
    checkpoint records, else `given`, else `default`. `given` is None when the flag was not given; CheckpointError
    naming both values when it contradicts the recorded one."""
    recorded = checkpoint.get('args', {}).get(name) if is_training_checkpoint(checkpoint) else None
    if recorded is None:
        return default if given is None else given
    if given is not None and comparable(given) != comparable(recorded):
        flag = '--' + name.replace('_', '-')
        raise CheckpointError(f'{flag} {format_setting(given)} contradicts {source}, trained with '
                              f'{flag} {format_setting(recorded)}: drop the flag to use the checkpoint\'s')
    return recorded


def comparable(value):
    return list(value) if isinstance(value, tuple) else value


def format_setting(value) -> str:
    if isinstance(value, bool):
        return 'on' if value else 'off'
    if isinstance(value, (list, tuple)):
        return ' '.join(str(item) for item in value)
    return str(value)


class FolderLock:
    """<folder>/.lock, holding 'PID HOST' of the one training run that writes to `folder`.

    A second train.py on the folder gets a CheckpointError naming the first. The lock appears whole (create_whole),
    so that another process never takes one being made for stale. A lock whose process has ended without removing it
    (SIGKILL, a crash) is taken over; of processes doing so at once only one gets it (take_over). Anything else at
    .lock (a folder, a file of other contents, one that cannot be read) is a CheckpointError naming it, left as it is.
    """

    def __init__(self, folder: str, flag: str):
        self.folder, self.flag = folder, flag
        self.path = os.path.join(folder, '.lock')
        self.content = f'{os.getpid()} {HOST}\n'
        self.held = self.created_folder = False

    def acquire(self) -> None:
        self.created_folder = not os.path.isdir(self.folder)
        try:
            os.makedirs(self.folder, exist_ok=True)
            for name in ('.lock', '.lock.takeover'):  # of a process killed inside create_whole
                remove_stale_temporaries(self.folder, name)
            while not create_whole(self.path, self.content):
                content, status = self.read()
                holder = self.holder(content, status)
                if holder is not None:
                    raise CheckpointError(f'{self.flag} {self.folder} is in use by {holder}: wait for it to end, or '
                                          f'choose another {self.flag}')
                self.take_over(content)
        except OSError as error:
            raise CheckpointError(f'{self.flag} {self.folder}: cannot make its lock {self.path} ({error.strerror}): '
                                  f'check the folder is writable') from None
        self.held = True

    def read(self) -> tuple[str | None, os.stat_result | None]:
        """The lock's content and status; (None, None) when it is gone."""
        try:
            with open(self.path) as file:
                return file.read(), os.fstat(file.fileno())
        except FileNotFoundError:
            return None, None
        except IsADirectoryError:
            raise CheckpointError(f'{self.path} is a folder, not the lock file train.py writes: remove it, or choose '
                                  f'another {self.flag}') from None
        except (OSError, UnicodeDecodeError) as error:
            reason = error.strerror if isinstance(error, OSError) else 'not text'
            raise CheckpointError(f'cannot read the lock {self.path} ({reason}): if no run uses {self.folder}, '
                                  f'remove it') from None

    def holder(self, content: str | None, status: os.stat_result | None) -> str | None:
        """'process P on HOST' of a lock whose process still runs (or runs on another host); None for a lock that
        is stale or gone. CheckpointError for a file train.py did not write."""
        if content is None:
            return None
        if not content:  # made by create_whole's fallback, and not written yet; or left so by a crash long ago
            return 'a process taking it now' if time.time() - status.st_mtime < EMPTY_LOCK_SECONDS else None
        match = re.fullmatch(r'(\d+) (\S+)\n?', content)
        if not match:
            raise CheckpointError(f'{self.path} holds {content[:40]!r}, not a lock train.py wrote: if no run uses '
                                  f'{self.folder}, remove it')
        pid, host = match.groups()
        if host == HOST and not process_alive(int(pid)):
            return None
        return f'process {pid} on {host}'

    def take_over(self, stale: str | None) -> None:
        """Remove the stale lock that holds `stale` (None: it is gone already). Processes that take it over at once
        take turns by <folder>/.lock.takeover, so that the one that comes second never removes the lock the first
        one has made meanwhile; the lock itself is then made by create_whole, which only one can win."""
        if stale is None:
            return
        turn = self.path + '.takeover'
        if not create_whole(turn, self.content):
            with contextlib.suppress(FileNotFoundError):  # a turn lasts milliseconds: one this old is a killed one's
                if time.time() - os.stat(turn).st_mtime > STALE_TAKEOVER_SECONDS:
                    os.remove(turn)
            time.sleep(0.01)
            return
        try:
            if self.read()[0] == stale:
                os.remove(self.path)
        finally:
            os.remove(turn)

    def release(self) -> None:
        """Remove the lock (if it is still this process's), and the folder if acquire() made it and nothing was
        written there. On a file system that turned read-only the lock stays: the next run takes it over."""
        if self.held:
            with contextlib.suppress(OSError, CheckpointError):
                if self.read()[0] == self.content:
                    os.remove(self.path)
            self.held = False
        if self.created_folder:
            with contextlib.suppress(OSError):  # not empty: the run wrote its checkpoints there
                os.rmdir(self.folder)


def create_whole(path: str, content: str) -> bool:
    """Create `path` holding `content` unless something is there (False then). The file is written under a temporary
    name and hard-linked to `path`, so that it never exists empty or half written; on a file system without hard
    links it is created empty, then written, and an empty lock younger than EMPTY_LOCK_SECONDS counts as held."""
    folder, name = os.path.split(path)
    descriptor, temporary = tempfile.mkstemp(dir=folder, prefix=f'.{name}.{os.getpid()}@{HOST}.', suffix='.tmp')
    try:
        os.fchmod(descriptor, 0o644)  # readable by other users' runs, which must be able to name its holder
        with os.fdopen(descriptor, 'w') as file:
            file.write(content)
        os.link(temporary, path)
        return True
    except FileExistsError:
        return False
    except OSError as error:
        if error.errno not in NO_HARD_LINKS:
            raise
    finally:
        os.remove(temporary)
    try:
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(descriptor, 'w') as file:
        file.write(content)
    return True
