"""Training checkpoints: writing, reading, listing and pruning them, and the random states they carry.

A checkpoint is <checkpoint-dir>/epoch-E-iter-S.pth (S counts all steps), a dict of
    model, optimizer, scaler (GradScaler; empty without CUDA AMP), epoch, step, batch_in_epoch,
    args (train.py's flags), backbone, random_states (torch, numpy, python, and cuda where present)
written atomically, so that a crash never leaves a truncated one. Bare state dicts (the original project's,
BackgroundMattingV2's) are read too: model/utils.py loads the weights of either.
"""
import argparse
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

from atomic_file import atomic_write
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
                  'backbone': args.model_backbone, 'random_states': random_states()}
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
