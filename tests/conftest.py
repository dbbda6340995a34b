"""Shared fixtures."""
import os

import pytest
import torch

from dataset.synthetic import generate
from model import MattingBase, MattingRefine
from script_runner import ablation_args, run_script, train_args


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line('markers', 'slow: runs the scripts as subprocesses (train.py, validate.py, the ablation, '
                                       'torchrun, the notebook); python -m pytest -q -m "not slow" leaves them out')


@pytest.fixture(scope='session')
def tiny_synthetic(tmp_path_factory) -> str:
    """Root of a tiny plain synthetic dataset, written once per session (about 0.2 s): 96x54 frames;
    train 3 clips, valid 2 clips, 12 frames each; 2 backgrounds per split. Use it read-only, as a VideoMatte
    dataset, e.g. make_dataset('videomatte240k', 'train', 4, 32, videomatte_root=tiny_synthetic,
    backgrounds_root=os.path.join(tiny_synthetic, 'backgrounds'))."""
    root = str(tmp_path_factory.mktemp('data') / 'synthetic')
    generate(root, width=96, height=54, frames=12, train_clips=3, valid_clips=2, train_backgrounds=2,
             valid_backgrounds=2)
    return root


@pytest.fixture(scope='session')
def tiny_ablation(tmp_path_factory) -> str:
    """report/ablation.json of scripts/ablation.py on the in-memory synthetic styles (plain and camouflage):
    seeds 0 and 1, 2 steps per run at 32x32, sequences of 3 frames, 1 valid and 1 test clip per style; every
    output under one temporary folder."""
    out = tmp_path_factory.mktemp('ablation')
    result = run_script('scripts/ablation.py', *ablation_args(str(out)), timeout=900)  # about 3 min on 2 cores
    assert result.returncode == 0, result.stdout + result.stderr
    return str(out / 'report' / 'ablation.json')


@pytest.fixture(scope='session')
def trained_checkpoint(tiny_synthetic, tmp_path_factory) -> str:
    """A checkpoint of 4 train.py steps on tiny_synthetic (a training checkpoint, as train.py writes it)."""
    out = str(tmp_path_factory.mktemp('trained'))
    result = run_script('train.py', *train_args(tiny_synthetic, out, '--max-steps', '4', '--log-valid-interval', '0'))
    assert result.returncode == 0, result.stderr
    return os.path.join(out, 'checkpoint', 'epoch-0-iter-4.pth')


@pytest.fixture(scope='session')
def random_checkpoint(tmp_path_factory) -> str:
    """A bare state dict of a randomly initialised MattingBase('mobilenetv2'), as the original project saved them."""
    torch.manual_seed(0)
    path = str(tmp_path_factory.mktemp('model') / 'mobilenetv2.pth')
    torch.save(MattingBase('mobilenetv2').state_dict(), path)
    return path


@pytest.fixture(scope='session')
def nan_checkpoint(tmp_path_factory) -> str:
    """A bare state dict of MattingBase('mobilenetv2') whose values are all finite but whose outputs are NaN: its
    first BatchNorm has a running variance of -1, as a diverged training run can leave it."""
    torch.manual_seed(0)
    model = MattingBase('mobilenetv2')
    model.backbone.features[0][1].running_var.fill_(-1)
    path = str(tmp_path_factory.mktemp('model') / 'diverged.pth')
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope='session')
def random_refine_checkpoint(tmp_path_factory) -> str:
    """A bare state dict of a randomly initialised MattingRefine('mobilenetv2'): refiner weights included, as in
    BackgroundMattingV2's MattingRefine checkpoints."""
    torch.manual_seed(0)
    path = str(tmp_path_factory.mktemp('model') / 'mobilenetv2-refine.pth')
    torch.save(MattingRefine('mobilenetv2').state_dict(), path)
    return path
