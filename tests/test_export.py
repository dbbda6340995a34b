"""scripts/export.py: TorchScript and ONNX with the state as explicit inputs, equal to PyTorch at other batch sizes
and frame sizes, over chunks that carry the state.

One test runs the script as a user does; the others call its main() in this process (a Python with torch takes
~5 s to start on the 2-core machine).
"""
import errno
import importlib.util
import math
import os
import signal

import pytest
import torch

from model import MattingBase
from script_runner import REPO, run_script, signal_when_called

spec = importlib.util.spec_from_file_location('export', os.path.join(REPO, 'scripts', 'export.py'))
export = importlib.util.module_from_spec(spec)
spec.loader.exec_module(export)

LOADERS = {'torchscript': export.load_torchscript, 'onnx': export.load_onnx}


def export_error(*args: str) -> str:
    """The one-line message export.py exits with."""
    with pytest.raises(SystemExit) as exit_info:
        export.main(args)
    message = exit_info.value.code
    assert isinstance(message, str) and message.startswith('error: ') and '\n' not in message
    return message


@pytest.mark.slow
def test_export_from_the_command_line(random_checkpoint, tmp_path):
    output = tmp_path / 'model.pt'
    result = run_script('scripts/export.py', '--model-backbone', 'mobilenetv2', '--model-checkpoint', random_checkpoint,
                        '--format', 'torchscript', '--output', str(output), '--resolution', '64', '96')
    assert result.returncode == 0, result.stderr
    assert 'batch 1 at 64x96' in result.stdout and 'batch 2 at 75x117' in result.stdout
    assert 'deprecated' not in result.stderr
    assert os.listdir(tmp_path) == ['model.pt']  # no temporary file left


@pytest.mark.slow  # full-size exports of two backbones
@pytest.mark.parametrize('backbone, export_format, recurrent', [
    ('mobilenetv2', 'torchscript', True), ('mobilenetv2', 'onnx', True), ('mobilenetv2', 'onnx', False),
    ('resnet50', 'torchscript', True), ('resnet50', 'onnx', True)])
def test_exported_model_equals_pytorch_and_carries_the_state(tmp_path, backbone, export_format, recurrent):
    torch.manual_seed(0)
    model = MattingBase(backbone, recurrent=recurrent).eval()
    checkpoint = tmp_path / 'model.pth'
    torch.save(model.state_dict(), checkpoint)
    output = tmp_path / f'model.{export_format}'
    export.main(['--model-backbone', backbone, '--model-checkpoint', str(checkpoint), '--format', export_format,
                 '--output', str(output), '--resolution', '64', '96', '--seq-length', '2',
                 *([] if recurrent else ['--without-convlstm'])])

    wrapper = export.ExplicitStateMatting(model).eval()
    run = LOADERS[export_format](output.read_bytes())
    torch.manual_seed(1)
    clip = torch.rand(3, 6, 3, 40, 72)  # neither the traced batch nor the traced size
    assert export.compare(wrapper, run, clip, seq_length=2) < 1e-4
    first = run(clip[:, :2], *export.zero_state(3, 40, 72))
    carried = run(clip[:, 2:4], *first[2:])
    restarted = run(clip[:, 2:4], *export.zero_state(3, 40, 72))
    # The state carries earlier frames into alpha; the ablation ignores it.
    assert ((carried[0] - restarted[0]).abs().max() > 1e-4) == recurrent


def test_zero_state_matches_the_model_state_shapes():
    model = MattingBase('mobilenetv2').eval()
    with torch.no_grad():
        *_, state = model(torch.rand(2, 1, 3, 45, 77))
    shapes = [tuple(tensor.shape) for pair in state for tensor in pair]
    assert shapes == [tuple(tensor.shape) for tensor in export.zero_state(2, 45, 77)]


def test_missing_onnx_packages_are_named(tmp_path, monkeypatch):
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name: None)
    message = export_error('--model-backbone', 'mobilenetv2', '--format', 'onnx', '--output', str(tmp_path / 'm.onnx'))
    assert message == 'error: ONNX export needs onnx and onnxruntime: pip install onnx onnxruntime'
    assert os.listdir(tmp_path) == []


def test_bad_checkpoint_and_output(tmp_path):
    other = tmp_path / 'resnet50.pth'
    torch.save(MattingBase('resnet50').state_dict(), other)
    output = tmp_path / 'm.onnx'
    message = export_error('--model-backbone', 'mobilenetv2', '--model-checkpoint', str(other), '--format', 'onnx',
                           '--output', str(output))
    assert 'made with backbone resnet50' in message and 'the model is mobilenetv2' in message
    assert not output.exists()
    message = export_error('--model-backbone', 'mobilenetv2', '--model-checkpoint', str(tmp_path / 'missing.pth'),
                           '--format', 'torchscript', '--output', str(output))
    assert 'missing.pth does not exist' in message
    assert 'is a folder' in export_error('--model-backbone', 'mobilenetv2', '--format', 'onnx', '--output',
                                         str(tmp_path))
    blocked = tmp_path / 'resnet50.pth' / 'm.pt'
    assert f'--output {blocked}: its folder cannot be created' in export_error(
        '--model-backbone', 'mobilenetv2', '--format', 'torchscript', '--output', str(blocked))
    assert 'give HEIGHT WIDTH or one size' in export_error('--model-backbone', 'mobilenetv2', '--format', 'onnx',
                                                            '--output', str(output), '--resolution', '32', '32', '32')
    assert os.listdir(tmp_path) == ['resnet50.pth']


def test_an_exporter_failure_is_one_line_naming_the_opset(tmp_path):
    pytest.importorskip('onnx')
    output = tmp_path / 'm.onnx'
    message = export_error('--model-backbone', 'mobilenetv2', '--format', 'onnx', '--output', str(output),
                           '--resolution', '32', '--opset', '5')
    assert 'the onnx export failed' in message and 'try another --opset than 5' in message
    assert os.listdir(tmp_path) == []


def test_a_mismatch_writes_nothing(tmp_path, capsys):
    output = tmp_path / 'new' / 'model.pt'
    message = export_error('--model-backbone', 'mobilenetv2', '--format', 'torchscript', '--output', str(output),
                           '--resolution', '32', '--tolerance', '-1')
    assert 'differs from PyTorch' in message and 'nothing written' in message
    assert 'batch 1 at 32x32' in capsys.readouterr().out, 'one --resolution number traces square frames'
    assert os.listdir(tmp_path) == []


def test_a_checkpoint_with_non_finite_outputs_is_not_exported(nan_checkpoint, tmp_path):
    message = export_error('--model-backbone', 'mobilenetv2', '--model-checkpoint', nan_checkpoint, '--format',
                           'torchscript', '--output', str(tmp_path / 'model.pt'), '--resolution', '32')
    assert message == f'error: checkpoint {nan_checkpoint} outputs non-finite values (NaN or inf): retrain it with ' \
                      f'lower learning rates or use an earlier checkpoint'
    assert os.listdir(tmp_path) == []


def test_an_exported_model_that_outputs_nan_fails_the_comparison(tmp_path, monkeypatch):
    def load_nan_model(data: bytes):
        return lambda *inputs: [output * math.nan for output in torchscript(data)(*inputs)]

    torchscript = export.load_torchscript
    monkeypatch.setattr(export, 'load_torchscript', load_nan_model)
    message = export_error('--model-backbone', 'mobilenetv2', '--format', 'torchscript', '--output',
                           str(tmp_path / 'model.pt'), '--resolution', '32')
    assert 'a batch of 1 at 32x32 hold NaN, so the exported model cannot be checked' in message
    assert os.listdir(tmp_path) == []


def test_a_full_disk_is_one_line_naming_the_folder(tmp_path, monkeypatch):
    def full_disk(descriptor: int) -> None:
        raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(os, 'fsync', full_disk)
    message = export_error('--model-backbone', 'mobilenetv2', '--format', 'torchscript', '--output',
                           str(tmp_path / 'model.pt'), '--resolution', '32')
    assert message.startswith(f'error: {tmp_path}: the disk is full, so model.pt cannot be written')
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize('export_format', ['torchscript', 'onnx'])
def test_the_checkpoint_is_never_the_output(random_checkpoint, tmp_path, export_format):
    checkpoint = tmp_path / 'epoch-0-iter-1.pth'
    checkpoint.write_bytes(open(random_checkpoint, 'rb').read())
    os.link(checkpoint, tmp_path / 'linked.pth')  # the same file under another name
    before = checkpoint.read_bytes()
    for output in (checkpoint, tmp_path / 'sub' / '..' / 'epoch-0-iter-1.pth', tmp_path / 'linked.pth'):
        message = export_error('--model-checkpoint', str(checkpoint), '--format', export_format, '--output',
                               str(output), '--resolution', '32')
        assert message == f'error: --model-checkpoint {checkpoint} is also an output of this run ({output}), which ' \
                          f'would overwrite it: choose another --output'
    assert checkpoint.read_bytes() == before and sorted(os.listdir(tmp_path)) == ['epoch-0-iter-1.pth', 'linked.pth']


def test_non_finite_weights_are_refused_even_where_no_output_reads_them(random_checkpoint, tmp_path):
    state_dict = torch.load(random_checkpoint)
    state_dict['decoder.conv4.weight'][10] = math.nan  # a hidden channel: MattingBase's pha and fgr never read it
    state_dict['aspp.convs.0.0.weight'][0, 0] = math.inf
    torch.save(state_dict, tmp_path / 'nan.pth')
    message = export_error('--model-checkpoint', str(tmp_path / 'nan.pth'), '--format', 'torchscript', '--output',
                           str(tmp_path / 'model.pt'), '--resolution', '32')
    assert message == f'error: checkpoint {tmp_path / "nan.pth"} holds non-finite values (NaN or inf) in ' \
                      f'aspp.convs.0.0.weight, decoder.conv4.weight: retrain it with lower learning rates or use an ' \
                      f'earlier checkpoint'
    assert os.listdir(tmp_path) == ['nan.pth']


def test_a_refiner_checkpoint_lacking_refiner_tensors_is_refused(random_refine_checkpoint, tmp_path):
    state_dict = torch.load(random_refine_checkpoint)
    del state_dict['refiner.conv1.weight']
    torch.save(state_dict, tmp_path / 'partial.pth')
    message = export_error('--model-checkpoint', str(tmp_path / 'partial.pth'), '--model-refine', '--refine-mode',
                           'full', '--format', 'torchscript', '--output', str(tmp_path / 'model.pt'))
    assert message.startswith(f'error: checkpoint {tmp_path / "partial.pth"} does not fit MattingRefine: it lacks 1 of '
                              f'its ') and '(refiner.conv1.weight)' in message
    assert os.listdir(tmp_path) == ['partial.pth']


@pytest.mark.parametrize('signum, status', [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_exits_with_its_status_and_writes_nothing(tmp_path, monkeypatch, capsys, signum, status):
    signal_when_called(monkeypatch, export, 'export_torchscript', signum)
    with pytest.raises(SystemExit) as exit_info:
        export.main(['--model-backbone', 'mobilenetv2', '--format', 'torchscript', '--output',
                     str(tmp_path / 'model.pt'), '--resolution', '32'])
    assert exit_info.value.code == status
    assert capsys.readouterr().err.strip().splitlines()[-1] == 'interrupted: nothing written'
    assert os.listdir(tmp_path) == []
