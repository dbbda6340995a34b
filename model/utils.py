"""Loading weights into MattingBase / MattingRefine: one entry point, load_weights, for this project's checkpoints,
the original project's and BackgroundMattingV2's state dicts, VainF's DeepLabV3 checkpoints and torchvision's
ImageNet backbones."""
import argparse
import re
import urllib.error
from collections.abc import Mapping
from typing import Optional

import torch
from torch import Tensor, nn

from checkpoint import CheckpointError, read_checkpoint, recorded_setting

from .model import MattingBase, MattingRefine

# DeepLabV3 checkpoints of VainF/DeepLabV3Plus-Pytorch: its ASPP sits in the classifier, and its MobileNetV2 splits
# `features` into low_level_features (blocks 0-3) and high_level_features (blocks 4 on).
DEEPLAB_RENAMES = [
    (r'^classifier\.classifier\.0\.', 'aspp.'),
    (r'^classifier\.aspp\.', 'aspp.'),
    (r'^backbone\.low_level_features\.(\d+)\.', lambda m: f'backbone.features.{int(m[1])}.'),
    (r'^backbone\.high_level_features\.(\d+)\.', lambda m: f'backbone.features.{int(m[1]) + 4}.'),
]
REQUIREMENTS = ('all', 'encoder', 'any')
NON_FINITE_ADVICE = 'retrain it with lower learning rates or use an earlier checkpoint'


def make_model(args: argparse.Namespace) -> MattingBase:
    """MattingRefine with --model-refine, else MattingBase, as the flags of train.py, validate.py, inference.py and
    export.py say (--model-backbone, --without-convlstm, --refine-*); random weights, train mode."""
    if args.model_refine:
        return MattingRefine(args.model_backbone, args.refine_backbone_scale, args.refine_mode,
                             args.refine_sample_pixels, args.refine_threshold, recurrent=not args.without_convlstm)
    return MattingBase(args.model_backbone, recurrent=not args.without_convlstm)


def load_checkpoint_model(args: argparse.Namespace) -> MattingBase:
    """The model of --model-checkpoint with its weights, on the CPU: its backbone, --without-convlstm and
    --model-refine are the ones it records (model_settings, refine_setting), resolved into args so that the caller
    and its outputs see the model that runs; the --refine-* flags are the run's own."""
    checkpoint, source = read_checkpoint(args.model_checkpoint), f'checkpoint {args.model_checkpoint}'
    args.model_backbone, args.without_convlstm = model_settings(checkpoint, source, args.model_backbone,
                                                                args.without_convlstm)
    args.model_refine = refine_setting(checkpoint, source, args.model_refine)
    model = make_model(args)
    load_weights(model, args.model_backbone, checkpoint, source)
    return model


def load_weights(model: nn.Module, backbone: str, checkpoint: Mapping, source: str, require: str = 'all',
                 verbose: bool = False) -> dict:
    """Load the weights of `checkpoint` into `model`, a MattingBase or MattingRefine built with `backbone`.

    checkpoint: any form state_dict_of accepts; source: how errors name it (e.g. 'checkpoint PATH' or the flag and
    file). require:
        'all'      every tensor of the model, each with the model's shape (this project's and the original project's
                   checkpoints: validation, inference, export, continuing training); for MattingRefine every tensor
                   of the refiner too, so that no path runs an untrained refiner or a part of one;
        'encoder'  the tensors that match by name and shape, the whole encoder (backbone and ASPP) among them, as
                   in this project's, the original project's and BackgroundMattingV2's state dicts;
        'any'      the tensors that match by name and shape, at least one (initialisation).
    Returns copy_matching_tensors' report (printed when verbose). Raises CheckpointError naming `source`, before
    anything is loaded, for a checkpoint of another backbone, and for one that does not meet `require` (naming the
    tensors it lacks); and, in every mode, for non-finite values (NaN or inf) in a tensor it loads, naming them.
    """
    if require not in REQUIREMENTS:
        raise ValueError(f'require={require!r}: use one of {REQUIREMENTS}')
    state_dict = state_dict_of(checkpoint)
    recorded = checkpoint.get('backbone')  # train.py records it; bare state dicts reveal it by their tensors
    found = recorded if isinstance(recorded, str) else backbone_of(state_dict)
    if found is not None and found != backbone:
        raise CheckpointError(f'{source} was made with backbone {found}, but the model is {backbone}: '
                              f'pass --model-backbone {found}')
    if require == 'all':
        if found is None:
            raise CheckpointError(f'{source} is not a MattingBase checkpoint (no backbone weights found)')
        if hasattr(model, 'refiner') and not has_trained_refiner(state_dict):
            raise CheckpointError(untrained_refiner_message(source))
        own = model.state_dict()
        missing = [name for name in own if name not in state_dict]
        mismatched = [name for name in own if name in state_dict and state_dict[name].shape != own[name].shape]
        if missing or mismatched:
            flaws = ([f'lacks {len(missing)} of its {len(own)} tensors ({preview(missing)})'] if missing else []) + \
                    ([f'has {len(mismatched)} of another shape ({preview(mismatched)})'] if mismatched else [])
            raise CheckpointError(f'{source} does not fit {type(model).__name__}: it {" and ".join(flaws)}, which '
                                  f'would run with random weights: use a whole checkpoint of this model, as train.py '
                                  f'writes them')
    report = copy_matching_tensors(model, state_dict, verbose)
    loaded = set(report['loaded']) | set(report['source_channels'])
    if not loaded:
        raise CheckpointError(f'{source}: no tensor matches this model')
    weights = model.state_dict()
    non_finite = [name for name, tensor in weights.items()
                  if name in loaded and tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if non_finite:
        raise CheckpointError(f'{source} holds non-finite values (NaN or inf) in {preview(non_finite)}: '
                              f'{NON_FINITE_ADVICE}')
    encoder = [name for name in weights if name.startswith(('backbone.', 'aspp.'))]
    lacking = [name for name in encoder if name not in loaded]
    if require == 'encoder' and lacking:
        raise CheckpointError(f'{source} is not a checkpoint of this model or of BackgroundMattingV2 (its encoder '
                              f'lacks {len(lacking)} of {len(encoder)} tensors, e.g. {lacking[:2]}); to load only '
                              f'the tensors that match, pass it to --model-pretrain-initialization')
    return report


def preview(names: list[str], shown: int = 4) -> str:
    """The first `shown` of `names`, comma-separated, and how many more."""
    more = f' and {len(names) - shown} more' if len(names) > shown else ''
    return ', '.join(names[:shown]) + more


def model_settings(checkpoint: Mapping, source: str, backbone: str | None,
                   without_convlstm: bool | None) -> tuple[str, bool]:
    """(backbone, without_convlstm) of the model that `checkpoint` is for: what the checkpoint records (train.py's
    checkpoints record its flags; a bare state dict shows its backbone by its tensors), else the flags given (None:
    not given; the ConvLSTM is used by default). CheckpointError naming both values for a flag that contradicts
    the checkpoint, and when nothing tells the backbone."""
    backbone = recorded_setting(checkpoint, 'model_backbone', backbone, backbone_of(state_dict_of(checkpoint)), source)
    if backbone is None:
        raise CheckpointError(f'{source} does not show which backbone it was made with: pass --model-backbone')
    return backbone, recorded_setting(checkpoint, 'without_convlstm', without_convlstm, False, source)


def check_finite_output(checkpoint: str, *outputs: Tensor, advice: str = NON_FINITE_ADVICE) -> None:
    """CheckpointError naming `checkpoint` unless every value of the model outputs is finite: a diverged training
    run can leave finite weights whose outputs are NaN, which would be written as an empty matte."""
    if not all(torch.isfinite(output).all() for output in outputs):
        raise CheckpointError(f'checkpoint {checkpoint} outputs non-finite values (NaN or inf): {advice}')


def refine_setting(checkpoint: Mapping, source: str, model_refine: bool | None) -> bool:
    """Whether the model for `checkpoint` is MattingRefine: what a training checkpoint records (train.py
    --model-refine), else the flag (None: not given, MattingBase). CheckpointError with what to do when the
    checkpoint has no trained refiner for --model-refine, and naming both values for a contradicting flag."""
    if model_refine and not has_trained_refiner(state_dict_of(checkpoint)):
        raise CheckpointError(untrained_refiner_message(source))
    return recorded_setting(checkpoint, 'model_refine', model_refine, False, source)


def has_trained_refiner(state_dict: Mapping[str, Tensor]) -> bool:
    """Whether a state dict holds refiner weights: train.py --model-refine's checkpoints and BackgroundMattingV2's
    MattingRefine checkpoints do, MattingBase checkpoints do not."""
    return any(name.startswith('refiner.') for name in state_dict)


def untrained_refiner_message(source: str) -> str:
    return (f'{source} holds no trained refiner (no refiner.* weights), so --model-refine would run random ones: '
            f'train the refiner from it with train.py --model-refine, or drop --model-refine and use '
            f'--downsample-ratio 0.25')


def copy_matching_tensors(model: nn.Module, state_dict: Mapping[str, Tensor], verbose: bool = False) -> dict:
    """Copy into `model` every tensor of `state_dict` (our module names) whose name and shape match; leave the rest.

    A BackgroundMattingV2 convolution that takes a background after the source (its first convolution, the
    decoder's last one, the refiner's) loads its source channels: the weights of the leading input channels.
    Returns {'loaded': names copied whole, 'source_channels': names copied without their background channels,
    'missing': model names absent from state_dict, 'mismatched': names present with another shape, 'unexpected':
    state_dict names the model does not have}, and prints their counts if verbose.
    """
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
    if verbose:
        without_background = ', '.join(report['source_channels']) or '-'
        print(f"Loaded {len(report['loaded']) + len(report['source_channels'])}/{len(own)} tensors "
              f"({len(report['source_channels'])} without background channels: {without_background}); "
              f"missing {len(report['missing'])}, shape mismatch {len(report['mismatched'])}, "
              f"unused {len(report['unexpected'])}")
    return report


def takes_background_channels(source: Tensor, target: Tensor) -> bool:
    """Whether `source` is `target`'s convolution weight with 3 more input channels (a background image) at the end."""
    return (source.dim() == 4 and source.shape[0] == target.shape[0] and source.shape[2:] == target.shape[2:]
            and source.shape[1] == target.shape[1] + 3)


def state_dict_of(checkpoint: Mapping) -> dict[str, Tensor]:
    """The model's tensors, under our module names, from any supported checkpoint: a bare state dict
    (BackgroundMattingV2, the original project), this project's training checkpoint {'model': ...}, VainF's
    DeepLabV3 {'model_state': ...}, or a DistributedDataParallel state dict ('module.' prefix)."""
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


def imagenet_weights(backbone: str) -> dict[str, Tensor]:
    """torchvision's ImageNet weights of `backbone`, named as MattingBase's backbone ('backbone.' prefix), for
    load_weights(..., require='any'). Downloads them once into the torch cache; CheckpointError with what to do
    when they are not cached and cannot be downloaded."""
    from torchvision.models import MobileNet_V2_Weights, ResNet50_Weights, ResNet101_Weights
    weights = {'resnet50': ResNet50_Weights.IMAGENET1K_V2, 'resnet101': ResNet101_Weights.IMAGENET1K_V2,
               'mobilenetv2': MobileNet_V2_Weights.IMAGENET1K_V2}[backbone]
    try:
        state_dict = weights.get_state_dict(progress=True)
    except (urllib.error.URLError, OSError) as error:
        raise CheckpointError(f'cannot download the ImageNet weights of {backbone} ({error}): connect to the '
                              f'internet once, or put {weights.url.rsplit("/", 1)[-1]} in the torch hub cache '
                              f'({torch.hub.get_dir()}/checkpoints)') from None
    return {f'backbone.{name}': tensor for name, tensor in state_dict.items()}
