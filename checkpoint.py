"""Training checkpoints: writing, reading, listing and pruning them, and the random states they carry.

A checkpoint is <checkpoint-dir>/epoch-E-iter-S.pth (S counts all steps), a dict of
    model, optimizer, scaler (GradScaler; empty without CUDA AMP), epoch, step, batch_in_epoch,
    args (train.py's flags), backbone, architecture ('MattingBase', or 'MattingRefine' with refiner.* weights: train.py
    --model-refine), random_states (torch, numpy, python, and cuda where present)
written atomically, so that a crash never leaves a truncated one. Bare state dicts (the original project's,
BackgroundMattingV2's) are read too: model/utils.py loads the weights of either.
"""
import argparse
import contextlib
import glob
import os
import pickle
import random
import re
import zipfile
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from atomic_file import HOST, atomic_write, process_alive
from errors import UserError

CHECKPOINT_NAME = re.compile(r'epoch-(\d+)-iter-(\d+)\.pth$')


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
    return checkpoint


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
    """<folder>/.lock, holding the process id and host name of the one training run that writes to `folder`.

    A second train.py on the folder gets a CheckpointError naming the first. A lock whose process has ended without
    removing it (SIGKILL, a crash) is taken over.
    """

    def __init__(self, folder: str, flag: str):
        self.folder, self.flag = folder, flag
        self.path = os.path.join(folder, '.lock')
        self.held = self.created_folder = False

    def acquire(self) -> None:
        self.created_folder = not os.path.isdir(self.folder)
        os.makedirs(self.folder, exist_ok=True)
        while not self.held:
            try:
                descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self.holder()
                if holder is not None:
                    raise CheckpointError(f'{self.flag} {self.folder} is in use by {holder}: wait for it to end, or '
                                          f'choose another {self.flag}') from None
                with contextlib.suppress(FileNotFoundError):
                    os.remove(self.path)
                continue
            with os.fdopen(descriptor, 'w') as file:
                file.write(f'{os.getpid()} {HOST}\n')
            self.held = True

    def holder(self) -> str | None:
        """'process P on HOST' of a lock whose process still runs (or runs on another host); None for a lock that
        is stale or gone."""
        try:
            with open(self.path) as file:
                pid, host = file.read().split()
        except (FileNotFoundError, ValueError):
            return None
        if host == HOST and not process_alive(int(pid)):
            return None
        return f'process {pid} on {host}'

    def release(self) -> None:
        """Remove the lock, and the folder if acquire() made it and nothing was written there."""
        if self.held:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path)
            self.held = False
        if self.created_folder:
            with contextlib.suppress(OSError):  # not empty: the run wrote its checkpoints there
                os.rmdir(self.folder)
