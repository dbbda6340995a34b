"""Inference speed-ups that leave the outputs unchanged: BatchNorm folded into convolutions, channels_last on CUDA.

    model = prepare_for_inference(MattingBase('resnet50'), device)   # eval mode, folded, channels_last on CUDA

In eval mode a BatchNorm is a per-channel affine map, y = (x - mean) / sqrt(var + eps) * weight + bias, so when it
directly follows a convolution it can be merged into that convolution's weight and bias
(torch.nn.utils.fusion.fuse_conv_bn_eval) and replaced by Identity: one pass over the feature map fewer, with
the same outputs up to float rounding. channels_last (NHWC) is the layout cuDNN's tensor-core convolutions prefer.
On the CPU it paid only while every large tensor was freshly page-faulted: with the allocator of
devices.reuse_freed_cpu_memory it is slower there (README, Performance), so it is used on CUDA only.
"""
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def fold_batchnorm(module: nn.Module) -> int:
    """Fold, in place, every BatchNorm2d that directly follows a Conv2d into it; returns how many were folded.

    "Directly follows" means, in this repository's and torchvision's models: the next child of an nn.Sequential
    (torchvision's Conv2dNormActivation, ASPP, ResNet downsample), or the child bn<k> of a module whose forward
    applies bn<k>(conv<k>(x)) (torchvision's ResNet blocks and stem, our Decoder and Refiner). The module must be
    in eval mode, since folding uses the running statistics.
    """
    if module.training:
        raise ValueError('fold_batchnorm needs a model in eval mode (call .eval() first): it folds the running '
                         'statistics, which training would change')
    folded = 0
    for parent in module.modules():
        children = dict(parent.named_children())
        for name, child in children.items():
            if not isinstance(child, nn.BatchNorm2d):
                continue
            conv_name = preceding_conv_name(parent, name, children)
            if conv_name is not None:
                setattr(parent, conv_name, fuse_conv_bn_eval(children[conv_name], child))
                setattr(parent, name, nn.Identity())
                folded += 1
    return folded


def preceding_conv_name(parent: nn.Module, bn_name: str, children: dict[str, nn.Module]) -> str | None:
    """The name of the Conv2d child whose output the BatchNorm child `bn_name` normalises, or None."""
    if isinstance(parent, nn.Sequential):
        names = list(children)
        index = names.index(bn_name)
        candidate = names[index - 1] if index > 0 else None
    else:
        candidate = 'conv' + bn_name[2:] if bn_name.startswith('bn') else None
    return candidate if isinstance(children.get(candidate), nn.Conv2d) else None


def prepare_for_inference(model: nn.Module, device: torch.device, channels_last: bool | None = None) -> nn.Module:
    """The model in eval mode on `device` with its BatchNorms folded, in channels_last layout if asked
    (None: on CUDA only)."""
    model = model.eval().to(device)
    fold_batchnorm(model)
    if channels_last is None:
        channels_last = device.type == 'cuda'
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model
