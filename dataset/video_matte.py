"""VideoMatte240K-style clips with background images: sequences for training and validation.

Layout (README, Data): <videomatte_dir>/fgr/<clip>/<frame>.jpg and <videomatte_dir>/pha/<clip>/<frame>.jpg
with the same frame names, and background images <background_dir>/*.jpg. Names starting with '.' are
ignored (extract_frames.py writes unfinished clips under such names).
"""
import os

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from errors import UserError
from images import IMAGE_EXTENSIONS

from .augmentation import MotionAugmentation, TrainFrameSampler, ValidFrameSampler, randint


class DatasetError(UserError):
    """A dataset on disk that cannot be used: the message names the path and what to do.

    A DataLoader worker's exception comes back to the main process with the worker's traceback as its
    message; str() keeps only the original one-line message, so that scripts print one clear line.
    """

    def __str__(self) -> str:
        lines = super().__str__().rstrip().splitlines() or ['']
        return lines[-1].split('DatasetError: ', 1)[-1]


class VideoMatte240KDataset(Dataset):
    """Sequences of T = seq_length frames of one clip, in time order, with one background per sequence.

    Item i is (fgr, pha, bgr): float32 tensors (T, 3, S, S), (T, 1, S, S), (T, 3, S, S) in 0..1 where
    S is augmentation.size, or (T, C, H, W) at the clip's own size when augmentation.size is None. The
    items are the clips' seq_length-frame tiles, `index[i] = (clip_idx, start)` (clip names in `clips`,
    their sorted frame names in `frames[clip_idx]`); frame_sampler picks the frames of item i
    (ValidFrameSampler: frames start..start+T-1 of the clip, the last tile of a clip possibly shorter).
    All randomness of item i (frames, background, augmentation) comes from a generator seeded by
    (seed, epoch, i), so an item is the same whatever the worker count or a resume mid-epoch;
    call set_epoch before each epoch (DataLoader workers copy the dataset when an epoch's iterator starts,
    so it does not reach persistent_workers). With background_per_clip, the background is drawn per clip
    from (seed, clip_idx) instead, so that all tiles of a clip share it (validation, carrying state
    between tiles); background_image_id fixes it to that image of the sorted background list.

    Frames are decoded just large enough to cover S x S (reduced_decoding lets JPEGs decode at 1/2, 1/4
    or 1/8 size directly) before augmentation crops them; backgrounds likewise, or, when S is None, just
    large enough to cover the clip's frames. The folders, clips, frame names and backgrounds are checked
    when the dataset is built; a frame that cannot be decoded raises DatasetError when its item is loaded.
    """

    def __init__(self, videomatte_dir: str, background_dir: str, seq_length: int,
                 frame_sampler: TrainFrameSampler | ValidFrameSampler, augmentation: MotionAugmentation,
                 seed: int = 0, background_image_id: int | None = None, background_per_clip: bool = False,
                 reduced_decoding: bool = True):
        if seq_length < 1 or seed < 0:
            raise DatasetError(f'seq_length {seq_length}, seed {seed}: use 1 or more frames and a seed of 0 or more')
        self.videomatte_dir = videomatte_dir
        self.clips, self.frames = list_clips(videomatte_dir)
        self.background_dir = background_dir
        self.backgrounds = list_images(background_dir, 'background images')
        if background_image_id is not None and not 0 <= background_image_id < len(self.backgrounds):
            raise DatasetError(f'{background_dir}: background_image_id {background_image_id} is out of range; '
                               f'use 0..{len(self.backgrounds) - 1}')
        self.index = [(clip_idx, start) for clip_idx, frames in enumerate(self.frames)
                      for start in range(0, len(frames), seq_length)]
        self.seq_length = seq_length
        self.frame_sampler = frame_sampler
        self.augmentation = augmentation
        self.seed = seed
        self.epoch = 0
        self.background_image_id = background_image_id
        self.background_per_clip = background_per_clip
        self.reduced_decoding = reduced_decoding

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        fgr, pha, bgr, generator = self.warped_item(index)
        return self.augmentation.appearance(fgr, pha, bgr, generator)

    def warped_item(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Generator]:
        """Item `index` before its appearance changes: uint8 (fgr, pha, bgr) in 0..255, shaped as the item, after
        the augmentation's geometry, and the item's generator in the state the appearance changes draw from.
        augmentation.appearance(*warped_item(index)) is item `index` (dataset/loader.py runs it on the GPU)."""
        clip_idx, start = self.index[index]
        generator = seeded_generator(self.seed, self.epoch, index)
        frames = self.frame_sampler(len(self.frames[clip_idx]), start, self.seq_length, generator)
        cover = (self.augmentation.size, self.augmentation.size) if self.augmentation.size else None
        names = [self.frames[clip_idx][i] for i in frames]
        fgr = [read_image(self._frame_path('fgr', clip_idx, n), 'RGB', cover, self.reduced_decoding) for n in names]
        pha = [read_image(self._frame_path('pha', clip_idx, n), 'L', cover, self.reduced_decoding) for n in names]
        self._check_same_size(clip_idx, names, fgr, pha)
        # The foreground keeps the decoder's (H, W, C) memory layout (a channels_last view), which OpenCV's warps
        # read without the two transposing copies that stacking (C, H, W) frames would cost.
        fgr, pha = torch.stack([image.permute(1, 2, 0) for image in fgr]).permute(0, 3, 1, 2), torch.stack(pha)
        background = self.backgrounds[self._background_idx(clip_idx, generator)]
        bgr = read_image(os.path.join(self.background_dir, background), 'RGB', cover or (fgr.shape[-1], fgr.shape[-2]),
                         self.reduced_decoding, remedy='replace or delete this background')
        return *self.augmentation.geometry(fgr, pha, bgr[None], generator), generator

    def _frame_path(self, part: str, clip_idx: int, frame: str) -> str:
        return os.path.join(self.videomatte_dir, part, self.clips[clip_idx], frame)

    def _check_same_size(self, clip_idx: int, names: list[str], fgr: list[torch.Tensor],
                         pha: list[torch.Tensor]) -> None:
        """DatasetError naming the first decoded frame or matte whose size differs from the item's first frame:
        the augmentation warps a matte with its frame's geometry, so a matte of another size would be misaligned."""
        size = fgr[0].shape[-2:]
        for name, fgr_frame, pha_frame in zip(names, fgr, pha):
            for part, image in (('fgr', fgr_frame), ('pha', pha_frame)):
                if image.shape[-2:] != size:
                    raise DatasetError(f'{self._frame_path(part, clip_idx, name)}: not the size of '
                                       f'{self._frame_path("fgr", clip_idx, names[0])}; a clip\'s frames and mattes '
                                       f'must all have one size: re-extract this clip')

    def _background_idx(self, clip_idx: int, generator: torch.Generator) -> int:
        if self.background_image_id is not None:
            return self.background_image_id
        if self.background_per_clip:
            generator = seeded_generator(self.seed, clip_idx)
        return randint(generator, len(self.backgrounds))


def seeded_generator(*keys: int) -> torch.Generator:
    """A torch.Generator seeded by a well-mixed hash of the non-negative integers `keys`."""
    seed = np.random.SeedSequence(keys).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(seed))


def read_image(path: str, mode: str, cover: tuple[int, int] | None = None, reduced_decoding: bool = True,
               remedy: str = 'replace it or re-extract its clip') -> torch.Tensor:
    """Decode an image to a uint8 tensor (C, H, W), C = 3 for mode 'RGB', 1 for 'L'.

    With cover = (width, height), the image is resized, keeping its aspect ratio, to the smallest size
    that covers it. With reduced_decoding instead, a JPEG is decoded at 1/2, 1/4 or 1/8 of its size
    (Pillow's draft mode: libjpeg scales while decoding), the smallest of these that still covers `cover`,
    and not resized further unless it is still twice that size (no JPEG): the augmentation's warp resamples it
    to the output size in the same pass as its crop, so a second resampling would only cost time (the
    geometry does not depend on the input size). 16-bit images (PNG mattes) are scaled to 8 bits, not clipped.
    Mode 'L' reads a matte: the alpha channel of an RGBA or LA image that has one (not opaque everywhere), else
    the luminance.
    An undecodable file raises DatasetError naming it, with `remedy` as the advice.
    """
    try:
        with Image.open(path) as image:
            size = image.size if cover is None else covering_size(image.size, cover)
            if reduced_decoding and size != image.size:
                image.draft(mode, size)
            # 16-bit (PNG mattes open as 'I;16' or, with some Pillow versions, 'I'): Pillow's convert would clip every
            # value above 255 to 255. Other 32-bit images keep Pillow's conversion.
            if image.mode.startswith('I;16') or (image.mode == 'I' and image.format == 'PNG'):
                image = Image.fromarray((np.asarray(image, np.float32) / 257).round().clip(0, 255).astype(np.uint8))
            if mode == 'L' and has_alpha(image):
                image = image.getchannel('A')
            if image.mode != mode:
                image = image.convert(mode)
            if image.size != size and (not reduced_decoding or image.size[0] >= 2 * size[0]):
                image = image.resize(size, Image.Resampling.BILINEAR)
            array = np.array(image)
    except OSError as error:  # Pillow's errors for missing, unidentified and truncated files
        raise DatasetError(f'{path}: cannot decode this image ({error}); {remedy}') from None
    return torch.from_numpy(array).permute(2, 0, 1) if array.ndim == 3 else torch.from_numpy(array)[None]


def has_alpha(image: Image.Image) -> bool:
    """Whether `image` is RGBA or LA with an alpha channel that is not 255 everywhere (an opaque one holds no matte:
    the matte is then in the colour channels)."""
    return image.mode in ('RGBA', 'LA') and image.getchannel('A').getextrema() != (255, 255)


def covering_size(size: tuple[int, int], cover: tuple[int, int]) -> tuple[int, int]:
    """The smallest (width, height) with the aspect ratio of `size` that covers `cover`."""
    scale = max(cover[0] / size[0], cover[1] / size[1])
    return max(cover[0], round(size[0] * scale)), max(cover[1], round(size[1] * scale))


def list_images(folder: str, what: str) -> list[str]:
    """Sorted names of the images in `folder` (hidden names skipped); DatasetError if there are none."""
    if not os.path.isdir(folder):
        raise DatasetError(f'{folder}: folder not found; set the dataset paths (data_path.py or its environment '
                           f'variables) to where the {what} are')
    names = sorted(name for name in os.listdir(folder)
                   if not name.startswith('.') and name.lower().endswith(IMAGE_EXTENSIONS))
    if not names:
        raise DatasetError(f'{folder}: no {what} (*.jpg, *.png); put them there or fix the dataset path')
    return names


def list_clips(videomatte_dir: str) -> tuple[list[str], list[list[str]]]:
    """Sorted clip names and, per clip, its sorted frame names, checked to be the same in fgr/ and pha/."""
    fgr_dir, pha_dir = os.path.join(videomatte_dir, 'fgr'), os.path.join(videomatte_dir, 'pha')
    for folder in (fgr_dir, pha_dir):
        if not os.path.isdir(folder):
            raise DatasetError(f'{folder}: folder not found; set the dataset paths (data_path.py or its environment '
                               f'variables) to frames extracted by scripts/extract_frames.py')
    clips = sorted(name for name in os.listdir(fgr_dir)
                   if not name.startswith('.') and os.path.isdir(os.path.join(fgr_dir, name)))
    pha_clips = sorted(name for name in os.listdir(pha_dir)
                       if not name.startswith('.') and os.path.isdir(os.path.join(pha_dir, name)))
    if not clips:
        raise DatasetError(f'{fgr_dir}: no clip folders; extract the frames with scripts/extract_frames.py')
    if clips != pha_clips:
        clip = sorted(set(clips) ^ set(pha_clips))[0]
        part = 'pha' if clip in clips else 'fgr'
        raise DatasetError(f'{os.path.join(videomatte_dir, part, clip)}: clip folder missing; re-extract clip '
                           f'{clip!r} or delete it from both fgr/ and pha/')
    frames = []
    for clip in clips:
        names = list_images(os.path.join(fgr_dir, clip), 'frames')
        pha_names = list_images(os.path.join(pha_dir, clip), 'frames')
        if names != pha_names:
            frame = sorted(set(names) ^ set(pha_names))[0]
            raise DatasetError(f'{os.path.join(videomatte_dir, "{fgr,pha}", clip)}: fgr has {len(names)} frames and '
                               f'pha {len(pha_names)}, {frame} in only one; re-extract this clip')
        frames.append(names)
    return clips, frames
