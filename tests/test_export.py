"""scripts/export.py: TorchScript and ONNX with the state as explicit inputs, equal to PyTorch at other sizes too."""
import importlib.util
import os

import pytest
import torch

from model import MattingBase
from script_runner import REPO, run_script

spec = importlib.util.spec_from_file_location('export', os.path.join(REPO, 'scripts', 'export.py'))
export = importlib.util.module_from_spec(spec)
spec.loader.exec_module(export)


@pytest.mark.parametrize('export_format', ['torchscript', 'onnx'])
def test_exported_model_equals_pytorch_at_another_size(random_checkpoint, tmp_path, export_format):
    output = tmp_path / f'model.{export_format}'
    result = run_script('scripts/export.py', '--model-backbone', 'mobilenetv2', '--model-checkpoint', random_checkpoint,
                        '--format', export_format, '--output', str(output), '--resolution', '64', '96',
                        '--seq-length', '2')
    assert result.returncode == 0, result.stderr
    assert 'largest difference from PyTorch over 2 chunks' in result.stdout
    assert [name for name in os.listdir(tmp_path) if name != output.name] == []  # no temporary file left

    model = MattingBase('mobilenetv2').eval()
    model.load_state_dict(torch.load(random_checkpoint))
    wrapper = export.ExplicitStateMatting(model).eval()
    run = export.load_torchscript(str(output)) if export_format == 'torchscript' else export.load_onnx(str(output))
    torch.manual_seed(1)
    clip = torch.rand(1, 4, 3, 80, 48)  # not the traced size: height and width are free
    assert export.compare(wrapper, run, clip, seq_length=2) < 1e-4


def test_zero_state_matches_the_model_state_shapes():
    model = MattingBase('mobilenetv2').eval()
    with torch.no_grad():
        *_, state = model(torch.rand(2, 1, 3, 45, 77))
    shapes = [tuple(tensor.shape) for pair in state for tensor in pair]
    assert shapes == [tuple(tensor.shape) for tensor in export.zero_state(2, 45, 77)]


def test_bad_checkpoint_and_output(random_checkpoint, tmp_path):
    other = tmp_path / 'resnet50.pth'
    torch.save(MattingBase('resnet50').state_dict(), other)
    result = run_script('scripts/export.py', '--model-backbone', 'mobilenetv2', '--model-checkpoint', str(other),
                        '--format', 'onnx', '--output', str(tmp_path / 'm.onnx'))
    assert result.returncode != 0 and 'resnet50' in result.stderr and 'mobilenetv2' in result.stderr
    assert not (tmp_path / 'm.onnx').exists()
    result = run_script('scripts/export.py', '--model-backbone', 'mobilenetv2', '--format', 'onnx',
                        '--output', str(tmp_path))
    assert result.returncode != 0 and 'is a folder' in result.stderr
