"""The training recipe's parts: learning-rate schedule flags and their defaults, gradient clipping, bf16 on the CPU."""
import math
import os

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from devices import low_precision_dtype
from loss import matting_loss
from model import MattingBase
from script_runner import run_script
from train import lr_factor, parser


def logged(log_dir: str, tag: str) -> dict[int, float]:
    events = EventAccumulator(log_dir)
    events.Reload()
    return {event.step: event.value for event in events.Scalars(tag)}


def test_the_default_schedule_is_the_original_constant_rate():
    args = parser.parse_args(['--dataset-name', 'synthetic', '--model-backbone', 'mobilenetv2', '--model-name', 'x'])
    assert (args.lr_schedule, args.warmup_steps, args.grad_clip) == ('constant', 0, 0)
    assert [lr_factor(step, 0, 100, 'constant') for step in (0, 50, 99, 500)] == [1.0] * 4


def test_warmup_then_cosine_to_zero():
    factors = [lr_factor(step, 10, 110, 'cosine') for step in range(110)]
    assert factors[:10] == pytest.approx([(step + 1) / 10 for step in range(10)])
    assert factors[10] == 1.0 and factors[60] == pytest.approx(0.5) and factors[109] == pytest.approx(
        0.5 * (1 + math.cos(math.pi * 99 / 100)))
    assert all(later <= earlier for earlier, later in zip(factors[10:], factors[11:]))
    assert lr_factor(500, 10, 110, 'cosine') == 0.0
    assert [lr_factor(step, 4, 100, 'constant') for step in (0, 3, 4, 99)] == [0.25, 1.0, 1.0, 1.0]


@pytest.mark.slow
def test_train_py_follows_the_schedule_and_clips(tmp_path):
    result = run_script('train.py', '--dataset-name', 'synthetic', '--model-backbone', 'mobilenetv2',
                        '--model-name', 'schedule', '--resolution', '32', '--batch-size', '1', '--seq-length', '2',
                        '--max-steps', '6', '--lr-schedule', 'cosine', '--warmup-steps', '2', '--lr-decoder', '1e-3',
                        '--grad-clip', '0.5', '--log-valid-interval', '0', '--device', 'cpu',
                        '--checkpoint-dir', str(tmp_path / 'checkpoint'), '--log-dir', str(tmp_path / 'log'))
    assert result.returncode == 0, result.stderr
    rates = logged(str(tmp_path / 'log'), 'train/lr_decoder')
    expected = {step: 1e-3 * lr_factor(step - 1, 2, 6, 'cosine') for step in range(1, 7)}
    assert rates == pytest.approx(expected, rel=1e-5)
    checkpoint = torch.load(tmp_path / 'checkpoint' / 'epoch-0-iter-6.pth', map_location='cpu', weights_only=False)
    assert [group['base_lr'] for group in checkpoint['optimizer']['param_groups']] == [1e-4, 5e-4, 1e-3]


@pytest.mark.slow
@pytest.mark.parametrize('flags, named', [
    (['--warmup-steps', '-1'], '--warmup-steps'), (['--grad-clip', '-0.1'], '--grad-clip'),
    (['--lr-schedule', 'step'], '--lr-schedule'),
    (['--camouflage-strength', '0.8', '0.2'], '--camouflage-strength 0.8 to 0.2'),
    (['--synthetic-clips', '0'], '--synthetic-clips')])
def test_bad_recipe_flags(tmp_path, flags, named):
    result = run_script('train.py', '--dataset-name', 'synthetic', '--model-backbone', 'mobilenetv2',
                        '--model-name', 'bad', '--device', 'cpu', '--checkpoint-dir', str(tmp_path / 'c'),
                        '--log-dir', str(tmp_path / 'l'), *flags)
    assert result.returncode != 0 and named in result.stderr
    assert not os.path.exists(tmp_path / 'c')


@pytest.mark.skipif(low_precision_dtype(torch.device('cpu')) is None,
                    reason='this CPU has no bfloat16 instructions (oneDNN reports none)')
def test_bf16_autocast_training_step_on_the_cpu():
    torch.manual_seed(0)
    model = MattingBase('mobilenetv2').train()
    src, pha = torch.rand(1, 2, 3, 32, 32), (torch.rand(1, 2, 1, 32, 32) > 0.5).float()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        pred_pha, pred_fgr, pred_err, _, _ = model(src)
    assert pred_pha.dtype == torch.bfloat16  # autocast reached the convolutions
    loss = matting_loss(pred_pha.float(), pred_fgr.float(), pred_err.float(), pha, src)['total']
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_amp_refused_on_a_cpu_without_bf16(monkeypatch, tmp_path):
    import train
    monkeypatch.setattr(train, 'low_precision_dtype', lambda device: None)
    args = train.parser.parse_args(['--dataset-name', 'synthetic', '--model-backbone', 'mobilenetv2', '--model-name',
                                    'x', '--amp', '--device', 'cpu', '--checkpoint-dir', str(tmp_path / 'c'),
                                    '--log-dir', str(tmp_path / 'l')])
    with pytest.raises(train.DeviceError, match='no bfloat16 instructions.*drop --amp'):
        train.train(args)
