"""MattingRefine end to end: its loss, train.py --model-refine from a MattingBase checkpoint (the second stage),
exact resume, validate.py / inference.py / export on what was trained, and the refusal of an untrained refiner."""
import argparse
import json
import os
import shutil

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import train
from checkpoint import CheckpointError, read_checkpoint, recorded_setting
from dataset import make_dataset
from errors import UserError
from loss import refine_loss
from model import MattingRefine
from model.utils import load_weights, refine_setting
from script_runner import run_script, train_args
from test_export import LOADERS, export, export_error
from test_inference import infer, infer_error

REFINE = ['--model-refine', '--refine-backbone-scale', '0.5', '--lr-refiner', '3e-3', '--batch-size', '1',
          '--seq-length', '4']


def refine_args(root: str, out: str, *extra: str) -> list[str]:
    """train.py flags for the second stage on the tiny dataset: MattingRefine with its network at half of the
    64x64 crops, sequences of 4 frames one at a time (the first stage, trained_checkpoint, used 2 x 3)."""
    args = train_args(root, out, '--log-valid-interval', '0', '--checkpoint-interval', '4', *extra)
    for flag in ('--batch-size', '--seq-length'):
        del args[args.index(flag):args.index(flag) + 2]
    return args


@pytest.fixture(scope='module')
def refine_run(tiny_synthetic, trained_checkpoint, tmp_path_factory) -> str:
    """The folder of 8 steps of train.py --model-refine from trained_checkpoint (a MattingBase training checkpoint),
    with checkpoints at steps 4 and 8."""
    out = str(tmp_path_factory.mktemp('refine'))
    result = run_script('train.py', *refine_args(tiny_synthetic, out, *REFINE, '--max-steps', '8',
                                                  '--model-last-checkpoint', trained_checkpoint))
    assert result.returncode == 0, result.stderr
    return out


def first_clip(root: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """src, pha, fgr (1, 4, C, 64, 64) of the tiny dataset's first training clip."""
    dataset = make_dataset('videomatte240k', 'train', 4, 64, videomatte_root=root,
                           backgrounds_root=os.path.join(root, 'backgrounds'))
    fgr, pha, bgr = (x.unsqueeze(0) for x in dataset[0])
    return fgr * pha + bgr * (1 - pha), pha, fgr


def test_refine_loss_covers_the_refined_and_the_coarse_outputs():
    pha, fgr = torch.rand(1, 2, 1, 16, 16), torch.rand(1, 2, 3, 16, 16)
    pha_sm, fgr_sm = pha[..., ::2, ::2], fgr[..., ::2, ::2]  # any coarse prediction; compared with resized targets
    losses = refine_loss(pha, fgr, pha_sm, fgr_sm, torch.zeros_like(pha_sm), pha, fgr)
    assert set(losses) == {'refined_pha_l1', 'refined_pha_sobel', 'refined_fgr_l1', 'coarse_pha_l1',
                           'coarse_pha_sobel', 'coarse_fgr_l1', 'coarse_err_l2', 'total'}
    assert losses['refined_pha_l1'] == 0 and losses['refined_fgr_l1'] == 0 and losses['coarse_pha_l1'] > 0
    assert losses['total'] == pytest.approx(sum(value for name, value in losses.items() if name != 'total'))
    worse = refine_loss(pha.flip(-1), fgr, pha_sm, fgr_sm, torch.zeros_like(pha_sm), pha, fgr)
    assert worse['refined_pha_l1'] > 0 and worse['refined_pha_sobel'] > 0
    assert worse['coarse_pha_l1'] == losses['coarse_pha_l1']


@pytest.mark.slow
def test_refiner_training_changes_the_refiner_and_lowers_its_loss(refine_run, trained_checkpoint, tiny_synthetic):
    checkpoint = read_checkpoint(os.path.join(refine_run, 'checkpoint', 'epoch-0-iter-8.pth'))
    assert checkpoint['architecture'] == 'MattingRefine' and checkpoint['args']['model_refine'] is True
    assert checkpoint['args']['refine_backbone_scale'] == 0.5 and checkpoint['args']['lr_refiner'] == 3e-3
    # The second stage keeps its own training settings, not the MattingBase run's (batch 2 x 3 frames).
    assert checkpoint['args']['batch_size'] == 1 and checkpoint['args']['seq_length'] == 4
    assert len(checkpoint['optimizer']['param_groups']) == 4

    torch.manual_seed(0)  # train.py's --seed: the refiner starts from the same random weights
    start = MattingRefine('mobilenetv2', backbone_scale=0.5)
    load_weights(start, 'mobilenetv2', read_checkpoint(trained_checkpoint), 'first stage', 'encoder')
    trained = MattingRefine('mobilenetv2', backbone_scale=0.5)
    load_weights(trained, 'mobilenetv2', checkpoint, 'second stage')
    for name, tensor in start.refiner.state_dict().items():
        if tensor.is_floating_point():
            assert not torch.equal(tensor, trained.refiner.state_dict()[name]), name

    src, pha, fgr = first_clip(tiny_synthetic)
    with torch.no_grad():
        before, after = (refine_loss(*model.train()(src)[:5], pha, fgr)['total'] for model in (start, trained))
    assert after < 0.9 * before
    scalars = EventAccumulator(os.path.join(refine_run, 'log')).Reload().Tags()['scalars']
    assert {'train/loss_refined_pha_l1', 'train/loss_coarse_err_l2', 'train/lr_refiner'} <= set(scalars)


@pytest.mark.slow
def test_a_refiner_checkpoint_resumes_exactly(refine_run, tiny_synthetic, tmp_path):
    (tmp_path / 'checkpoint').mkdir()
    shutil.copy(os.path.join(refine_run, 'checkpoint', 'epoch-0-iter-4.pth'), tmp_path / 'checkpoint')
    # No --model-refine or refiner flag: the resumed run takes them from its checkpoint.
    result = run_script('train.py', *refine_args(tiny_synthetic, str(tmp_path), '--max-steps', '8', '--resume'))
    assert result.returncode == 0, result.stderr
    resumed = read_checkpoint(str(tmp_path / 'checkpoint' / 'epoch-0-iter-8.pth'))
    straight = read_checkpoint(os.path.join(refine_run, 'checkpoint', 'epoch-0-iter-8.pth'))
    assert resumed['architecture'] == 'MattingRefine'
    for name, tensor in straight['model'].items():
        assert torch.equal(tensor, resumed['model'][name]), name


def run_settings(*flags: str) -> argparse.Namespace:
    """train.py's flags as a new run resolves them."""
    args = train.parser.parse_args(['--dataset-name', 'synthetic', '--model-backbone', 'mobilenetv2',
                                    '--model-name', 'x', *flags],
                                   namespace=argparse.Namespace(**dict.fromkeys(train.RUN_SETTINGS)))
    for name in train.RUN_SETTINGS:
        setattr(args, name, recorded_setting({}, name, getattr(args, name), train.parser.get_default(name), 'none'))
    return args


@pytest.mark.parametrize('flags, message', [
    (['--refine-mode', 'full'], '--refine-mode is for the refiner: add --model-refine'),
    (['--lr-refiner', '1e-3'], '--lr-refiner is for the refiner: add --model-refine'),
    (['--model-refine', '--resolution', '64'], '--resolution 64 x --refine-backbone-scale 0.25 is under the 32'),
    (['--model-refine', '--refine-backbone-scale', '0.75'], '--refine-backbone-scale must be in (0, 0.5]'),
])
def test_refiner_flags_out_of_place_or_range(flags, message):
    with pytest.raises(UserError, match=message.replace('(', r'\(').replace(')', r'\)')):
        train.check_flags(run_settings(*flags))
    train.check_flags(run_settings('--model-refine', '--resolution', '128'))


@pytest.mark.slow
def test_an_untrained_refiner_is_refused_everywhere(trained_checkpoint, tiny_synthetic, tmp_path):
    expected = (f'error: checkpoint {trained_checkpoint} holds no trained refiner (no refiner.* weights), so '
                f'--model-refine would run random ones: train the refiner from it with train.py --model-refine, or '
                f'drop --model-refine and use --downsample-ratio 0.25')
    frames = os.path.join(tiny_synthetic, 'valid', 'fgr', '0000')
    assert infer_error(trained_checkpoint, frames, tmp_path / 'out', '--model-refine') == expected
    assert export_error('--model-checkpoint', trained_checkpoint, '--model-refine', '--format', 'torchscript',
                        '--output', str(tmp_path / 'm.pt')) == expected
    result = run_script('validate.py', '--dataset-name', 'synthetic', '--model-checkpoint', trained_checkpoint,
                        '--output-path', str(tmp_path / 'valid'), '--model-refine', '--device', 'cpu')
    assert result.returncode == 1 and result.stderr.strip().splitlines()[-1] == expected
    assert not (tmp_path / 'valid').exists() and os.listdir(tmp_path) == []
    with pytest.raises(CheckpointError, match='holds no trained refiner'):  # the one loading entry point, too
        load_weights(MattingRefine('mobilenetv2'), 'mobilenetv2', read_checkpoint(trained_checkpoint), 'checkpoint')


def test_a_backgroundmattingv2_refine_checkpoint_still_loads():
    model = MattingRefine('mobilenetv2')
    bm2 = {name: torch.randn_like(tensor.float()).to(tensor.dtype) for name, tensor in model.state_dict().items()
           if 'convlstm' not in name}
    for name in ('backbone.features.0.0.weight', 'decoder.conv4.weight', 'refiner.conv1.weight'):
        out_channels, in_channels, *kernel = bm2[name].shape
        bm2[name] = torch.randn(out_channels, in_channels + 3, *kernel)  # its background channels
    assert refine_setting(bm2, 'bm2', True) is True and refine_setting(bm2, 'bm2', None) is False
    report = load_weights(model, 'mobilenetv2', bm2, 'bm2', 'encoder')
    assert 'refiner.conv1.weight' in report['source_channels']
    torch.testing.assert_close(model.refiner.conv1.weight, bm2['refiner.conv1.weight'][:, :39])


@pytest.mark.slow
def test_validate_and_inference_run_the_trained_refiner(refine_run, tiny_synthetic, tmp_path):
    checkpoint = os.path.join(refine_run, 'checkpoint', 'epoch-0-iter-8.pth')
    output = tmp_path / 'valid'
    result = run_script('validate.py', '--dataset-name', 'videomatte240k', '--videomatte-root', tiny_synthetic,
                        '--backgrounds-root', os.path.join(tiny_synthetic, 'backgrounds'), '--model-checkpoint',
                        checkpoint, '--output-path', str(output), '--seq-length', '4', '--device', 'cpu',
                        '--refine-backbone-scale', '0.5', '--refine-mode', 'full', '--save-images')
    assert result.returncode == 0, result.stderr
    assert 'frames/s' in result.stdout
    summary = json.loads((output / 'metrics.json').read_text())
    assert summary['settings']['model_refine'] is True  # from the checkpoint: no --model-refine given
    assert summary['frames'] == 24 and summary['frames_per_second'] > 0 and summary['mean']['MAD'] > 0
    assert (output / '0000' / 'pred_pha' / '000000.png').exists()

    infer(checkpoint, read_video_folder(tiny_synthetic, tmp_path), tmp_path / 'matted', '--output-types', 'pha',
          '--output-format', 'png', '--refine-backbone-scale', '0.5', '--refine-mode', 'thresholding')
    assert sorted(os.listdir(tmp_path / 'matted' / 'pha'))[-1] == '000011.png'
    message = infer_error(checkpoint, read_video_folder(tiny_synthetic, tmp_path), tmp_path / 'down',
                          '--downsample-ratio', '0.5')
    assert '--model-refine sets its own scale' in message


def read_video_folder(root: str, tmp_path) -> str:
    """The first clip's composited frames of the tiny dataset on disk as a folder of PNGs (96x54)."""
    folder = tmp_path / 'frames'
    if not folder.exists():
        shutil.copytree(os.path.join(root, 'valid', 'fgr', '0000'), folder)
    return str(folder)


@pytest.mark.slow
def test_validate_downsample_ratio_reports_full_size_metrics(trained_checkpoint, tiny_synthetic, tmp_path):
    result = run_script('validate.py', '--dataset-name', 'videomatte240k', '--videomatte-root', tiny_synthetic,
                        '--backgrounds-root', os.path.join(tiny_synthetic, 'backgrounds'), '--model-checkpoint',
                        trained_checkpoint, '--output-path', str(tmp_path), '--seq-length', '4', '--device', 'cpu',
                        '--downsample-ratio', '0.5')
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / 'metrics.json').read_text())
    assert summary['settings']['downsample_ratio'] == 0.5 and summary['settings']['model_refine'] is False
    assert summary['frames'] == 24 and summary['mean']['MAD'] > 0


@pytest.mark.slow
@pytest.mark.parametrize('export_format, mode', [('onnx', 'full'), ('torchscript', 'thresholding')])
def test_export_of_the_trained_refiner(refine_run, tmp_path, export_format, mode):
    checkpoint = os.path.join(refine_run, 'checkpoint', 'epoch-0-iter-8.pth')
    model = MattingRefine('mobilenetv2', 0.5, 'full')
    load_weights(model, 'mobilenetv2', read_checkpoint(checkpoint), 'checkpoint')
    torch.manual_seed(1)
    clip = torch.rand(2, 4, 3, 64, 96)
    with torch.no_grad():
        err = model.eval()(clip[:, :2])[4].flatten(0, 1)
    # The refiner thresholds the error resized to the patch grid: its median where positive selects some patches.
    err = torch.nn.functional.interpolate(err, (16, 24), mode='bilinear', align_corners=False)
    threshold = err[err > 0].median().item()
    output = tmp_path / f'refine.{export_format}'
    export.main(['--model-checkpoint', checkpoint, '--format', export_format, '--output', str(output),
                 '--resolution', '64', '96', '--seq-length', '2', '--refine-backbone-scale', '0.5', '--refine-mode',
                 mode, '--refine-threshold', str(threshold)])
    model.refiner.mode, model.refiner.threshold = mode, threshold
    with torch.no_grad():
        refined = model(clip[:, :2])[5]
    assert refined.sum() == refined.numel() if mode == 'full' else 0 < refined.sum() < refined.numel()
    run = LOADERS[export_format](output.read_bytes())
    assert export.compare(export.ExplicitStateMatting(model).eval(), run, clip, seq_length=2) < 1e-4


def test_sampling_mode_does_not_export(random_refine_checkpoint, tmp_path):
    message = export_error('--model-checkpoint', random_refine_checkpoint, '--model-refine', '--refine-mode',
                           'sampling', '--format', 'onnx', '--output', str(tmp_path / 'm.onnx'))
    assert message == ("error: --refine-mode sampling does not export: the number of patches it refines is fixed "
                       "when traced; use --refine-mode full or thresholding")
    assert os.listdir(tmp_path) == []
