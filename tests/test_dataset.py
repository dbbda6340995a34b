"""VideoMatte240KDataset, make_dataset and data_path on tiny generated data, and each bad input."""
import importlib
import os

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms.v2 import functional as TF

import data_path
from dataset import DatasetError, make_dataset
from dataset.augmentation import TrainFrameSampler, ValidFrameSampler, valid_augmentation
from dataset.loader import TrainLoader
from dataset.synthetic import random_palette, texture
from dataset.video_matte import VideoMatte240KDataset, read_image


def write_clips(root, clips: dict[str, int], backgrounds: int = 2, size=(24, 16)) -> tuple[str, str]:
    """PNG clips whose fgr encodes (clip number, frame number) in its red and green values; alpha 1."""
    videomatte, background_dir = os.path.join(root, 'videomatte'), os.path.join(root, 'backgrounds')
    for c, (clip, n_frames) in enumerate(clips.items()):
        for t in range(n_frames):
            for part, value in (('fgr', (40 * c + 20, 8 * t, 0)), ('pha', (255,) * 3)):
                os.makedirs(os.path.join(videomatte, part, clip), exist_ok=True)
                Image.new('RGB', size, value).save(os.path.join(videomatte, part, clip, f'{t:05d}.png'))
    os.makedirs(background_dir)
    for i in range(backgrounds):
        Image.new('RGB', size, (0, 0, 50 * i + 50)).save(os.path.join(background_dir, f'{i:04d}.png'))
    return videomatte, background_dir


def on_disk(tiny_synthetic: str, split: str, seq_length: int, resolution: int | None, **options):
    """make_dataset of the tiny synthetic dataset on disk, read as a VideoMatte dataset."""
    return make_dataset('videomatte240k', split, seq_length, resolution, videomatte_root=tiny_synthetic,
                        backgrounds_root=os.path.join(tiny_synthetic, 'backgrounds'), **options)


def decode_frames(fgr: torch.Tensor) -> list[tuple[int, int]]:
    """(clip number, frame number) of each frame of an item of write_clips' data."""
    values = (fgr[:, :2, 0, 0] * 255).round().long()
    return [((red.item() - 20) // 40, green.item() // 8) for red, green in values]


def frames_dataset(videomatte: str, background_dir: str, seq_length: int, sampler=None,
                   **options) -> VideoMatte240KDataset:
    return VideoMatte240KDataset(videomatte, background_dir, seq_length, sampler or ValidFrameSampler(),
                                 valid_augmentation(None), **options)


def test_items_shapes_dtypes_ranges_and_batching(tiny_synthetic):
    train = on_disk(tiny_synthetic, 'train', 4, 32)
    fgr, pha, bgr = next(iter(DataLoader(train, batch_size=2)))
    assert fgr.shape == (2, 4, 3, 32, 32) and pha.shape == (2, 4, 1, 32, 32) and bgr.shape == (2, 4, 3, 32, 32)
    valid = on_disk(tiny_synthetic, 'valid', 4, None)
    for item in (train[1], valid[0]):
        for image in item:
            assert image.dtype == torch.float32 and image.min() >= 0 and image.max() <= 1
    assert [tuple(image.shape) for image in valid[0]] == [(4, 3, 54, 96), (4, 1, 54, 96), (4, 3, 54, 96)]
    assert pha.max() == 1 and pha.min() == 0 and ((pha > 0.05) & (pha < 0.95)).any(), 'soft alpha edges'


def test_train_items_are_frames_of_one_clip_in_order(tmp_path):
    videomatte, backgrounds = write_clips(tmp_path, {'a': 30, 'b': 20, 'c': 25})
    data = frames_dataset(videomatte, backgrounds, 6, TrainFrameSampler())
    speeds = set()
    for i in range(len(data)):
        frames = decode_frames(data[i][0])
        assert len({clip for clip, _ in frames}) == 1 and frames[0][0] == data.index[i][0]
        steps = {b - a for (_, a), (_, b) in zip(frames, frames[1:])}
        assert len(steps) == 1 and steps.pop() >= 1
        speeds.add(frames[1][1] - frames[0][1])
    assert len(speeds) > 1, 'a random playback speed'


def test_valid_items_tile_each_clip_in_order(tmp_path):
    videomatte, backgrounds = write_clips(tmp_path, {'a': 10, 'b': 3})
    data = frames_dataset(videomatte, backgrounds, 4, background_per_clip=True)
    assert data.clips == ['a', 'b'] and data.index == [(0, 0), (0, 4), (0, 8), (1, 0)]
    assert [decode_frames(data[i][0]) for i in range(len(data))] == [
        [(0, 0), (0, 1), (0, 2), (0, 3)], [(0, 4), (0, 5), (0, 6), (0, 7)], [(0, 8), (0, 9)], [(1, 0), (1, 1), (1, 2)]]
    backgrounds_of_a = {data[i][2][0, 2, 0, 0].item() for i in range(3)}
    assert len(backgrounds_of_a) == 1, 'one background for all the tiles of a clip'


def test_a_clip_shorter_than_the_sequence_plays_forward_and_back(tmp_path):
    videomatte, backgrounds = write_clips(tmp_path, {'a': 3})
    fgr = frames_dataset(videomatte, backgrounds, 6, TrainFrameSampler())[0][0]
    assert [frame for _, frame in decode_frames(fgr)] == [0, 1, 2, 1, 0, 1]


def test_items_depend_only_on_seed_epoch_and_index(tiny_synthetic):
    def items(workers: int, epoch: int = 0, seed: int = 3) -> list:
        data = on_disk(tiny_synthetic, 'train', 3, 24, seed=seed)
        data.set_epoch(epoch)
        return list(DataLoader(data, batch_size=1, num_workers=workers))

    torch.manual_seed(123)
    reference = items(0)
    torch.manual_seed(456)
    for other in (items(0), items(2)):
        for a, b in zip(reference, other):
            assert all(torch.equal(x, y) for x, y in zip(a, b))
    resumed = on_disk(tiny_synthetic, 'train', 3, 24, seed=3)[2]
    assert all(torch.equal(x, y[0]) for x, y in zip(resumed, reference[2])), 'a resumed run sees the same item'
    for changed in (items(0, epoch=1), items(0, seed=4)):
        assert any(not torch.equal(a[0], b[0]) for a, b in zip(reference, changed))


def test_valid_items_are_the_decoded_frames(tiny_synthetic):
    data = on_disk(tiny_synthetic, 'valid', 5, None)
    assert data.index[:4] == [(0, 0), (0, 5), (0, 10), (1, 0)] and len(data[2][0]) == 2
    fgr, pha, _ = data[1]
    frame = os.path.join(tiny_synthetic, 'valid', '{}', data.clips[0], '00005.jpg')
    torch.testing.assert_close(fgr[0], read_image(frame.format('fgr'), 'RGB') / 255, atol=1e-4, rtol=0)
    torch.testing.assert_close(pha[0], read_image(frame.format('pha'), 'L') / 255, atol=1e-4, rtol=0)
    assert all(torch.equal(a, b) for a, b in zip(data[1], data[1]))


def test_fixed_background_by_index(tiny_synthetic):
    data = on_disk(tiny_synthetic, 'valid', 4, None, background_image_id=1)
    expected = read_image(os.path.join(tiny_synthetic, 'backgrounds', 'valid', data.backgrounds[1]), 'RGB') / 255
    for i in range(len(data)):
        torch.testing.assert_close(data[i][2][0], expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize('mode', ['RGB', 'L'])
def test_reduced_decoding_covers_the_size_and_matches_full_decoding(tmp_path, mode):
    rng = np.random.default_rng(0)
    path = str(tmp_path / 'large.jpg')
    Image.fromarray(texture(rng, 450, 800, 450, random_palette(rng))).save(path, quality=95)
    reduced = read_image(path, mode, (100, 100), reduced_decoding=True).float()
    full = read_image(path, mode, (100, 100), reduced_decoding=False).float()
    channels = 3 if mode == 'RGB' else 1
    assert full.shape == (channels, 100, 178)
    # Decoded at 1/4 (the smallest JPEG scale that still covers 100x178) and left for the warp to resample.
    assert reduced.shape == (channels, 113, 200)
    resized = TF.resize(reduced, [100, 178], antialias=True)
    assert (resized - full).abs().mean() < 2 and (resized - full).abs().quantile(0.99) < 16


def test_reduced_decoding_still_resizes_what_draft_mode_cannot_reduce(tmp_path):
    path = str(tmp_path / 'large.png')
    Image.fromarray(np.zeros((450, 800, 3), np.uint8)).save(path)
    assert read_image(path, 'RGB', (100, 100), reduced_decoding=True).shape == (3, 100, 178)


def test_synthetic_names_refuse_folders(tmp_path):
    root = tmp_path / 'synthetic-camouflage'
    with pytest.raises(DatasetError, match='drawn in memory.*--dataset-name videomatte240k --videomatte-root ROOT '
                                           '--backgrounds-root ROOT/backgrounds'):
        make_dataset('synthetic-camouflage', 'valid', 8, 32, videomatte_root=str(root))
    assert os.listdir(tmp_path) == [], 'nothing is generated'


def test_data_path_environment_overrides_and_repo_relative_defaults(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv('VIDEOMATTE240K_PATH', 'here/VideoMatte240K')
    monkeypatch.setenv('BACKGROUNDS_PATH', '/somewhere/backgrounds')
    try:
        importlib.reload(data_path)
        assert data_path.DATA_PATH['videomatte240k'] == str(tmp_path / 'here' / 'VideoMatte240K')
        assert data_path.dataset_paths('videomatte240k') == (str(tmp_path / 'here' / 'VideoMatte240K'),
                                                             '/somewhere/backgrounds')
        assert data_path.dataset_paths('videomatte8k') == (
            os.path.join(os.path.dirname(data_path.__file__), 'data', 'VideoMatte8K'), '/somewhere/backgrounds')
        assert data_path.DATASETS[-2:] == ['synthetic', 'synthetic-camouflage']
        assert 'synthetic' not in data_path.DATA_PATH, 'the synthetic datasets live nowhere'
    finally:
        monkeypatch.undo()
        importlib.reload(data_path)


# Bad input: each is one DatasetError naming the path, raised when the dataset is built where possible.

def test_unknown_dataset_name_and_split():
    with pytest.raises(DatasetError, match="unknown dataset 'videomatte20k'; use one of videomatte240k, "):
        make_dataset('videomatte20k', 'train', 8, 224)
    with pytest.raises(DatasetError, match="unknown split 'holdout'; use one of train, valid, test"):
        make_dataset('synthetic', 'holdout', 8, 224)


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(DatasetError, match=f'{tmp_path}/nowhere/train/fgr: folder not found'):
        make_dataset('videomatte240k', 'train', 8, 224, videomatte_root=str(tmp_path / 'nowhere'))
    os.makedirs(tmp_path / 'empty' / 'fgr')
    os.makedirs(tmp_path / 'empty' / 'pha')
    with pytest.raises(DatasetError, match=f'{tmp_path}/empty/fgr: no clip folders'):
        frames_dataset(str(tmp_path / 'empty'), str(tmp_path), 4)


def test_clip_in_fgr_only(tmp_path):
    videomatte, backgrounds = write_clips(tmp_path, {'a': 3})
    os.makedirs(os.path.join(videomatte, 'fgr', 'b'))
    with pytest.raises(DatasetError, match=f'{videomatte}/pha/b: clip folder missing'):
        frames_dataset(videomatte, backgrounds, 4)


def test_fgr_and_pha_frames_differ_in_count_or_names(tmp_path):
    videomatte, backgrounds = write_clips(tmp_path, {'a': 4})
    os.remove(os.path.join(videomatte, 'pha', 'a', '00003.png'))
    with pytest.raises(DatasetError, match='fgr has 4 frames and pha 3, 00003.png in only one'):
        frames_dataset(videomatte, backgrounds, 4)
    os.rename(os.path.join(videomatte, 'pha', 'a', '00002.png'), os.path.join(videomatte, 'pha', 'a', '00003.png'))
    os.remove(os.path.join(videomatte, 'fgr', 'a', '00003.png'))
    with pytest.raises(DatasetError, match='fgr has 3 frames and pha 3, 00002.png in only one'):
        frames_dataset(videomatte, backgrounds, 4)


def test_undecodable_frame_names_its_path_even_from_a_worker(tmp_path):
    videomatte, backgrounds = write_clips(tmp_path, {'a': 4})
    broken = os.path.join(videomatte, 'fgr', 'a', '00002.png')
    with open(broken, 'wb') as file:
        file.write(b'not an image')
    data = frames_dataset(videomatte, backgrounds, 4)
    with pytest.raises(DatasetError, match=f'{broken}: cannot decode this image'):
        data[0]
    with pytest.raises(DatasetError) as error:
        next(iter(DataLoader(data, num_workers=1)))
    assert 'Traceback' in error.value.args[0], 'the worker traceback is kept in args'
    assert str(error.value) == f'{broken}: cannot decode this image (cannot identify image file {broken!r}); ' \
                               f'replace it or re-extract its clip'


def test_undecodable_background_says_to_replace_it(tmp_path):
    videomatte, backgrounds = write_clips(tmp_path, {'a': 2}, backgrounds=1)
    broken = os.path.join(backgrounds, '0000.png')
    with open(broken, 'wb') as file:
        file.write(b'not an image')
    with pytest.raises(DatasetError, match=f'{broken}: cannot decode this image .*; replace or delete this background'):
        frames_dataset(videomatte, backgrounds, 2)[0]


@pytest.mark.parametrize('part', ['fgr', 'pha'])
def test_a_frame_or_matte_of_another_size_names_its_file(tmp_path, part):
    videomatte, backgrounds = write_clips(tmp_path, {'a': 3})
    odd = os.path.join(videomatte, part, 'a', '00002.png')
    Image.new('RGB', (30, 16), (255, 255, 255)).save(odd)
    data = frames_dataset(videomatte, backgrounds, 3)
    first = os.path.join(videomatte, 'fgr', 'a', '00000.png')
    with pytest.raises(DatasetError, match=f'{odd}: not the size of {first}; .* re-extract this clip'):
        data[0]


def test_16_bit_mattes_are_scaled_to_8_bits(tmp_path):
    path = str(tmp_path / 'matte.png')
    ramp = np.linspace(0, 65535, 24 * 16).round().astype(np.uint16).reshape(16, 24)
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith('I'), 'the PNG is 16-bit'
    matte = read_image(path, 'L')
    assert matte.dtype == torch.uint8 and matte.shape == (1, 16, 24)
    assert (matte[0].int() - torch.from_numpy(ramp / 257).round().int()).abs().max() <= 0, 'scaled, not clipped'
    tiff = str(tmp_path / 'matte.tif')
    Image.fromarray(np.array([[0, 128, 255]], np.int32)).save(tiff)
    assert read_image(tiff, 'L')[0].tolist() == [[0, 128, 255]], 'a 32-bit image holding 0..255 is not divided'


def test_a_matte_in_the_alpha_channel_is_read_from_it(tmp_path):
    ramp = np.linspace(0, 255, 24 * 16).round().astype(np.uint8).reshape(16, 24)
    black = np.zeros((16, 24, 3), np.uint8)
    Image.fromarray(np.dstack([black, ramp]), 'RGBA').save(tmp_path / 'rgba.png')
    Image.fromarray(np.dstack([black[..., 0], ramp]), 'LA').save(tmp_path / 'la.png')
    for name in ('rgba.png', 'la.png'):
        assert read_image(str(tmp_path / name), 'L')[0].tolist() == ramp.tolist(), name
    opaque = np.dstack([ramp, ramp, ramp, np.full_like(ramp, 255)])
    Image.fromarray(opaque, 'RGBA').save(tmp_path / 'opaque.png')
    assert read_image(str(tmp_path / 'opaque.png'), 'L')[0].tolist() == ramp.tolist(), 'an opaque alpha holds no matte'
    assert read_image(str(tmp_path / 'rgba.png'), 'RGB').sum() == 0, 'frames read as before'


def test_background_folder_without_images(tmp_path):
    videomatte, backgrounds = write_clips(tmp_path, {'a': 2}, backgrounds=0)
    with pytest.raises(DatasetError, match=f'{backgrounds}: no background images'):
        frames_dataset(videomatte, backgrounds, 4)


def test_bad_background_index_and_sequence_length(tmp_path):
    videomatte, backgrounds = write_clips(tmp_path, {'a': 2})
    with pytest.raises(DatasetError, match='background_image_id 2 is out of range; use 0..1'):
        frames_dataset(videomatte, backgrounds, 4, background_image_id=2)
    with pytest.raises(DatasetError, match='seq_length 0, seed 0: use 1 or more frames'):
        frames_dataset(videomatte, backgrounds, 0)


@pytest.mark.parametrize('resolution', [0, -8])
def test_crop_size_below_one_pixel(tiny_synthetic, resolution):
    with pytest.raises(DatasetError, match=f'--resolution {resolution}: use a crop size of 1 pixel or more'):
        on_disk(tiny_synthetic, 'train', 2, resolution)


def todays_batches(dataset, epoch: int, indices: list[int], batch_size: int) -> list:
    """The batches of the loader train.py had before TrainLoader: a DataLoader per epoch after set_epoch."""
    dataset.set_epoch(epoch)
    return list(DataLoader(dataset, batch_size, sampler=indices, drop_last=True))


def assert_same_batches(got: list, expected: list) -> None:
    assert len(got) == len(expected)
    for got_batch, expected_batch in zip(got, expected):
        for got_tensor, expected_tensor in zip(got_batch, expected_batch):
            assert got_tensor.dtype == torch.float32
            assert torch.equal(got_tensor, expected_tensor)  # on the CPU both paths run the same code


@pytest.mark.parametrize('finish_on_device', [False, True])
def test_train_loader_gives_todays_batches_epoch_after_epoch(tiny_synthetic, finish_on_device):
    data = on_disk(tiny_synthetic, 'train', 3, 32, seed=2)
    loader = TrainLoader(data, 2, 2, torch.device('cpu'), finish_on_device=finish_on_device)
    assert loader.loader.persistent_workers
    for epoch in (0, 1):  # epoch 1 from the same workers: the epoch reaches them with the sampler's items
        indices = torch.randperm(len(data), generator=torch.Generator().manual_seed(epoch)).tolist()
        assert_same_batches(list(loader.epoch(epoch, indices)), todays_batches(data, epoch, indices, 2))
    assert 0 <= loader.wait_share() <= 1


def test_train_loader_resumed_mid_epoch_gives_the_uninterrupted_batches(tiny_synthetic):
    data = on_disk(tiny_synthetic, 'train', 3, 32)
    indices = list(range(len(data)))[::-1]
    uninterrupted = TrainLoader(data, 2, 1, torch.device('cpu'), finish_on_device=True)
    list(uninterrupted.epoch(0, indices))
    batches = list(uninterrupted.epoch(1, indices))
    resumed = TrainLoader(data, 2, 1, torch.device('cpu'), finish_on_device=True)  # a new process, as --resume
    assert_same_batches(list(resumed.epoch(1, indices[2 * 2:])), batches[2:])


class ThreadCounts(torch.utils.data.Dataset):
    """Items (OpenCV threads, torch threads, epoch) as a DataLoader worker sees them."""

    def __init__(self):
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> tuple[torch.Tensor]:
        return torch.tensor([cv2.getNumThreads(), torch.get_num_threads(), self.epoch]),


def test_train_loader_workers_run_one_opencv_and_one_torch_thread():
    loader = TrainLoader(ThreadCounts(), 2, 2, torch.device('cpu'))
    for epoch in (3, 4):
        for batch, in loader.epoch(epoch, range(4)):
            assert batch.tolist() == [[1, 1, epoch]] * 2

