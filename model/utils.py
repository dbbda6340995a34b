"""Loading weights: checkpoints of this project, BackgroundMattingV2, DeepLabV3 and torchvision's ImageNet."""
import os
import pickle
import re
import urllib.error
import zipfile
from collections.abc import Mapping
from typing import Optional

import torch
from torch import Tensor, nn

# DeepLabV3 checkpoints of VainF/DeepLabV3Plus-Pytorch: its ASPP sits in the classifier, and its MobileNetV2 splits
# `features` into low_level_features (blocks 0-3) and high_level_features (blocks 4 on).
DEEPLAB_RENAMES = [
    (r'^classifier\.classifier\.0\.', 'aspp.'),
    (r'^classifier\.aspp\.', 'aspp.'),
    (r'^backbone\.low_level_features\.(\d+)\.', lambda m: f'backbone.features.{int(m[1])}.'),
    (r'^backbone\.high_level_features\.(\d+)\.', lambda m: f'backbone.features.{int(m[1]) + 4}.'),
]


class CheckpointError(ValueError):
    """A checkpoint file that is missing, unreadable or made for another model."""


def load_matched_state_dict(model: nn.Module, state_dict: Mapping[str, Tensor], print_stats: bool = True) -> dict:
    """Copy into `model` every tensor of `state_dict` whose name and shape match; leave the rest as they are.

    Accepts this project's checkpoints, BackgroundMattingV2's and VainF's DeepLabV3 ones (see unwrap_state_dict).
    A BackgroundMattingV2 convolution that takes a background after the source (its first convolution, the
    decoder's last one, the refiner's) loads its source channels: the weights of the leading input channels.

    Returns {'loaded': names copied whole, 'source_channels': names copied without their background
    channels, 'missing': model names absent from the checkpoint, 'mismatched': names present with another
    shape, 'unexpected': checkpoint names the model does not have}.
    """
    state_dict = unwrap_state_dict(state_dict)
    report = {'loaded': [], 'source_channels': [], 'missing': [], 'mismatched': [], 'unexpected': []}
    own = model.state_dict()
    with torch.no_grad():
        for name, target in own.items():
            if name not in state_dict:
                report['missing'].append(name)
                continue
            source = state_dict[name]
            if source.shape == target.shape:
                target.copy_(source)
                report['loaded'].append(name)
            elif takes_background_channels(source, target):
                target.copy_(source[:, :target.shape[1]])
                report['source_channels'].append(name)
            else:
                report['mismatched'].append(name)
    report['unexpected'] = [name for name in state_dict if name not in own]
    if print_stats:
        print(f"Loaded {len(report['loaded']) + len(report['source_channels'])}/{len(own)} tensors "
              f"({len(report['source_channels'])} without background channels: {', '.join(report['source_channels']) or '-'}); "
              f"missing {len(report['missing'])}, shape mismatch {len(report['mismatched'])}, "
              f"unused {len(report['unexpected'])}")
    return report


def takes_background_channels(source: Tensor, target: Tensor) -> bool:
    """Whether `source` is `target`'s convolution weight with 3 more input channels (a background image) at the end."""
    return (source.dim() == 4 and source.shape[0] == target.shape[0] and source.shape[2:] == target.shape[2:]
            and source.shape[1] == target.shape[1] + 3)


def unwrap_state_dict(checkpoint: Mapping) -> dict[str, Tensor]:
    """The model's tensors from any supported checkpoint: a bare state dict (BackgroundMattingV2, the original
    project), this project's training checkpoint {'model': ...}, VainF's DeepLabV3 {'model_state': ...} (renamed
    to our module names), or a DistributedDataParallel state dict ('module.' prefix)."""
    for key in ('model', 'model_state', 'state_dict'):
        if isinstance(checkpoint.get(key), Mapping):
            checkpoint = checkpoint[key]
            break
    state_dict = {}
    for name, tensor in checkpoint.items():
        name = name.removeprefix('module.')
        for pattern, replacement in DEEPLAB_RENAMES:
            name = re.sub(pattern, replacement, name)
        state_dict[name] = tensor
    return state_dict


def backbone_of(state_dict: Mapping[str, Tensor]) -> Optional[str]:
    """Which backbone a state dict of MattingBase / MattingRefine was made with, or None if it is not one."""
    if 'backbone.features.0.0.weight' in state_dict:
        return 'mobilenetv2'
    if 'backbone.layer3.22.conv1.weight' in state_dict:
        return 'resnet101'
    if 'backbone.layer3.0.conv1.weight' in state_dict:
        return 'resnet50'
    return None


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


def load_checkpoint_weights(model: nn.Module, backbone: str, checkpoint: Mapping, path: str) -> None:
    """Load this project's (or the original project's) checkpoint strictly into `model`, built with `backbone`.

    Raises CheckpointError naming both backbones when the checkpoint was made with another one, and naming the
    differing tensors when it belongs to another model. The refiner's weights may be absent (a MattingBase
    checkpoint loaded into MattingRefine): the refiner then keeps its initialisation.
    """
    state_dict = unwrap_state_dict(checkpoint)
    found = backbone_of(state_dict)
    if found is None:
        raise CheckpointError(f'checkpoint {path} is not a MattingBase checkpoint (no backbone weights found)')
    if found != backbone:
        raise CheckpointError(f'checkpoint {path} was made with backbone {found}, '
                              f'but the model is {backbone}: pass --model-backbone {found}')
    own = model.state_dict()
    missing = [name for name in own if name not in state_dict and not name.startswith('refiner.')]
    mismatched = [name for name in own if name in state_dict and state_dict[name].shape != own[name].shape]
    if missing or mismatched:
        raise CheckpointError(f'checkpoint {path} does not fit this model: missing {missing[:3]}, '
                              f'other shapes {mismatched[:3]}')
    model.load_state_dict({name: state_dict[name] for name in own if name in state_dict}, strict=False)


def load_imagenet_backbone(model: nn.Module, backbone: str) -> None:
    """Load torchvision's ImageNet weights into model.backbone (downloads them once into the torch cache).

    Raises CheckpointError with a clear message when they are not cached and cannot be downloaded.
    """
    from torchvision.models import MobileNet_V2_Weights, ResNet50_Weights, ResNet101_Weights
    weights = {'resnet50': ResNet50_Weights.IMAGENET1K_V2, 'resnet101': ResNet101_Weights.IMAGENET1K_V2,
               'mobilenetv2': MobileNet_V2_Weights.IMAGENET1K_V2}[backbone]
    try:
        state_dict = weights.get_state_dict(progress=True)
    except (urllib.error.URLError, OSError) as error:
        raise CheckpointError(f'cannot download the ImageNet weights of {backbone} ({error}): connect to the '
                              f'internet once, or put {weights.url.rsplit("/", 1)[-1]} in the torch hub cache '
                              f'({torch.hub.get_dir()}/checkpoints)') from None
    load_matched_state_dict(model.backbone, state_dict, print_stats=False)
