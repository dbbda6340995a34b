"""model/fold_batchnorm.py: folding BatchNorm into convolutions and channels_last leave the outputs unchanged."""
import copy

import pytest
import torch
from torch import nn

from model import MattingBase, MattingRefine
from model.fold_batchnorm import fold_batchnorm, prepare_for_inference


def with_trained_statistics(model: nn.Module) -> nn.Module:
    """The model in eval mode with BatchNorm statistics and affine parameters unlike the initial ones (a fresh
    BatchNorm is the identity, which would make any folding look right)."""
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            for tensor, low, high in ((module.running_mean, -0.5, 0.5), (module.running_var, 0.5, 2),
                                      (module.weight.data, 0.5, 1.5), (module.bias.data, -0.2, 0.2)):
                tensor.copy_(torch.empty(tensor.shape).uniform_(low, high, generator=generator))
    return model.eval()


@pytest.mark.parametrize('make_model', [
    lambda: MattingBase('mobilenetv2'), lambda: MattingBase('resnet50'),
    lambda: MattingRefine('mobilenetv2', backbone_scale=0.5, refine_mode='full'),
    lambda: MattingRefine('mobilenetv2', backbone_scale=0.5, refine_mode='sampling', refine_sample_pixels=500),
], ids=['mobilenetv2', 'resnet50', 'refine-full', 'refine-sampling'])
def test_every_batchnorm_is_folded_and_outputs_are_unchanged(make_model):
    torch.manual_seed(0)
    model = with_trained_statistics(make_model())
    batchnorms = sum(isinstance(module, nn.BatchNorm2d) for module in model.modules())
    folded = copy.deepcopy(model)
    assert fold_batchnorm(folded) == batchnorms
    assert not any(isinstance(module, nn.BatchNorm2d) for module in folded.modules())
    prepared = prepare_for_inference(copy.deepcopy(model), torch.device('cpu'))
    channels_last = prepare_for_inference(copy.deepcopy(model), torch.device('cpu'), channels_last=True)
    src = torch.rand(1, 3, 3, 64, 96)
    with torch.no_grad():
        expected = model(src)
        for candidate in (folded, prepared, channels_last):
            outputs = candidate(src)
            for name, want, got in zip(('pha', 'fgr', 'err'), expected[:3], outputs[:3]):
                assert (want - got).abs().max().item() < 1e-4, name
            for (want_h, want_c), (got_h, got_c) in zip(expected[-1], outputs[-1]):
                assert (want_h - got_h).abs().max().item() < 1e-4


def test_folding_needs_eval_mode():
    with pytest.raises(ValueError, match='eval mode'):
        fold_batchnorm(MattingBase('mobilenetv2').train())


def test_channels_last_by_default_on_cuda_only():
    def conv_weights_channels_last(model: nn.Module) -> list[bool]:
        # Weights of 1x1 and depthwise convolutions are contiguous in both layouts at once: left out.
        return [module.weight.is_contiguous(memory_format=torch.channels_last) for module in model.modules()
                if isinstance(module, nn.Conv2d) and module.kernel_size != (1, 1) and module.weight.shape[1] > 1]
    cpu = prepare_for_inference(MattingBase('mobilenetv2'), torch.device('cpu'))
    forced = prepare_for_inference(MattingBase('mobilenetv2'), torch.device('cpu'), channels_last=True)
    assert not any(conv_weights_channels_last(cpu))
    assert all(conv_weights_channels_last(forced))
