"""Datasets by name: make_dataset() is what train.py and validate.py use."""
import os

from data_path import SYNTHETIC_STYLES, dataset_paths

from .augmentation import TrainFrameSampler, ValidFrameSampler, train_augmentation, valid_augmentation
from .video_matte import DatasetError, VideoMatte240KDataset

SPLITS = ('train', 'valid', 'test')


def make_dataset(dataset_name: str, split: str, seq_length: int, resolution: int | None, seed: int = 0,
                 background_image_id: int | None = None, videomatte_root: str | None = None,
                 backgrounds_root: str | None = None, reduced_decoding: bool = True, synthetic_clips: int | None = None,
                 synthetic_frames: int | None = None, camouflage_strength: tuple[float, float] = (1.0, 1.0)):
    """The `split` ('train', 'valid' or 'test') of a dataset named in data_path.DATASETS.

    A synthetic dataset is drawn in memory (dataset/synthetic.py's SyntheticDataset) at resolution x resolution
    (DEFAULT_SIZE when None): the train split a seq_length-frame window of a new clip per item, valid and test fixed
    sets of synthetic_clips clips (default and at most 32; DatasetError for more, and for synthetic_clips with a
    dataset on disk); clips of every split have synthetic_frames frames (default 40, at
    least seq_length in training); each camouflage clip's strength is drawn from the
    range camouflage_strength (default: 1, fully camouflaged). It takes no videomatte_root,
    backgrounds_root or background_image_id.
    Otherwise the frames are read from disk; videomatte_root and backgrounds_root override DATA_PATH, and the test
    split is the folder <videomatte_root>/test with backgrounds in <backgrounds_root>/test:
    'train': random playback speed, the train augmentation preset, resolution x resolution crops.
    'valid', 'test': the clips tiled in order (dataset.index, dataset.clips), no random change, each frame's
    shorter side resized to `resolution` and centre-cropped square, one background per clip.
    resolution=None keeps the frames' own size. Any problem with the data raises DatasetError.
    """
    if split not in SPLITS:
        raise DatasetError(f'unknown split {split!r}; use one of {", ".join(SPLITS)}')
    if resolution is not None and resolution < 1:
        raise DatasetError(f'--resolution {resolution}: use a crop size of 1 pixel or more')
    if dataset_name in SYNTHETIC_STYLES:
        # Imported here: importing it with the package would make `python -m dataset.synthetic` warn.
        from .synthetic import DEFAULT_SIZE, EVAL_CLIPS, EVAL_FRAMES, SyntheticDataset
        synthetic_frames = EVAL_FRAMES if synthetic_frames is None else synthetic_frames
        if videomatte_root or backgrounds_root or background_image_id is not None:
            raise DatasetError(f'the {dataset_name} dataset is drawn in memory and has no folders or background images '
                               f'to choose; to read a synthetic dataset written by python -m dataset.synthetic, pass '
                               f'--dataset-name videomatte240k --videomatte-root ROOT '
                               f'--backgrounds-root ROOT/backgrounds')
        if resolution is not None and resolution < 16:
            raise DatasetError(f'--resolution {resolution}: the synthetic datasets need 16 pixels or more')
        if synthetic_clips is not None and synthetic_clips < 1 or synthetic_frames < 1:
            raise DatasetError(f'{synthetic_clips} clips of {synthetic_frames} frames: use 1 or more of each')
        if split != 'train' and synthetic_clips is not None and synthetic_clips > EVAL_CLIPS:
            raise DatasetError(f'--synthetic-clips {synthetic_clips}: the {split} split of {dataset_name} has '
                               f'{EVAL_CLIPS} clips: use 1 to {EVAL_CLIPS}')
        if not 0 <= camouflage_strength[0] <= camouflage_strength[1] <= 1:
            raise DatasetError(f'--camouflage-strength {camouflage_strength[0]:g} to {camouflage_strength[1]:g}: use '
                               f'values within 0..1, the low one first')
        return SyntheticDataset(SYNTHETIC_STYLES[dataset_name], split, seq_length, resolution or DEFAULT_SIZE,
                                seed=seed, clips=synthetic_clips if split != 'train' else None,
                                frames=synthetic_frames, camouflage=camouflage_strength)
    if synthetic_clips is not None:
        raise DatasetError(f'--synthetic-clips {synthetic_clips} is for the synthetic datasets, and {dataset_name} '
                           f'is read from disk with all its clips: leave it out')
    try:
        default_videomatte, default_backgrounds = dataset_paths(dataset_name)
    except ValueError as error:
        raise DatasetError(str(error)) from None
    train = split == 'train'
    return VideoMatte240KDataset(
        os.path.join(videomatte_root or default_videomatte, split),
        os.path.join(backgrounds_root or default_backgrounds, split),
        seq_length, TrainFrameSampler() if train else ValidFrameSampler(),
        train_augmentation(resolution) if train else valid_augmentation(resolution), seed=seed,
        background_image_id=background_image_id, background_per_clip=not train, reduced_decoding=reduced_decoding)
