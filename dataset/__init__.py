"""Datasets by name: make_dataset() is what train.py and validate.py use."""
import os
import sys

from data_path import SYNTHETIC_BACKGROUNDS, SYNTHETIC_STYLES, dataset_paths

from .augmentation import TrainFrameSampler, ValidFrameSampler, train_augmentation, valid_augmentation
from .video_matte import DatasetError, VideoMatte240KDataset

SPLITS = ('train', 'valid')


def make_dataset(dataset_name: str, split: str, seq_length: int, resolution: int | None, seed: int = 0,
                 background_image_id: int | None = None, videomatte_root: str | None = None,
                 backgrounds_root: str | None = None, reduced_decoding: bool = True) -> VideoMatte240KDataset:
    """The `split` ('train' or 'valid') of a dataset named in data_path.DATA_PATH.

    videomatte_root and backgrounds_root override DATA_PATH; a synthetic dataset keeps its backgrounds
    inside its root and is generated there (defaults, seed 0) on first use, when the root is missing or empty.
    'train': random playback speed, the train augmentation preset (for the camouflage style with the same
    appearance changes for figure and background, which keeps its single frames ambiguous), resolution x
    resolution crops.
    'valid': the clips tiled in order (dataset.index, dataset.clips), no random change, each frame's
    shorter side resized to `resolution` and centre-cropped square, one background per clip.
    resolution=None keeps the frames' own size. Any problem with the data raises DatasetError.
    """
    if split not in SPLITS:
        raise DatasetError(f'unknown split {split!r}; use one of {", ".join(SPLITS)}')
    if resolution is not None and resolution < 1:
        raise DatasetError(f'--resolution {resolution}: use a crop size of 1 pixel or more')
    try:
        default_videomatte, default_backgrounds = dataset_paths(dataset_name)
    except ValueError as error:
        raise DatasetError(str(error)) from None
    videomatte_root = videomatte_root or default_videomatte
    if dataset_name in SYNTHETIC_STYLES:
        default_backgrounds = os.path.join(videomatte_root, SYNTHETIC_BACKGROUNDS)
        if not os.path.isdir(videomatte_root) or not os.listdir(videomatte_root):
            # Imported here: importing it with the package would make `python -m dataset.synthetic` warn.
            from .synthetic import generate
            print(f'generating the {dataset_name} dataset in {videomatte_root} (first use)', file=sys.stderr)
            try:
                generate(videomatte_root, style=SYNTHETIC_STYLES[dataset_name])
            except OSError as error:
                raise DatasetError(f'cannot generate the {dataset_name} dataset: {error}') from None
    train = split == 'train'
    return VideoMatte240KDataset(
        os.path.join(videomatte_root, split), os.path.join(backgrounds_root or default_backgrounds, split),
        seq_length, TrainFrameSampler() if train else ValidFrameSampler(),
        train_augmentation(resolution, shared_appearance=SYNTHETIC_STYLES.get(dataset_name) == 'camouflage')
        if train else valid_augmentation(resolution), seed=seed,
        background_image_id=background_image_id, background_per_clip=not train, reduced_decoding=reduced_decoding)
