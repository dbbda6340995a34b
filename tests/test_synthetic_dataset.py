"""The synthetic data drawn in memory: determinism by (seed, epoch, item), no repeats, held-out splits, camouflage."""
import numpy as np
import pytest
import torch

from dataset import DatasetError, make_dataset
from dataset.synthetic import EVAL_CLIPS, EVAL_FRAMES, TRAIN_CLIPS_PER_EPOCH, SyntheticDataset


def item(style='plain', split='train', seed=0, epoch=0, index=0, seq_length=4, size=32, clips=None):
    dataset = SyntheticDataset(style, split, seq_length, size, seed=seed, clips=clips)
    dataset.set_epoch(epoch)
    return dataset[index]


def same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize('style', ['plain', 'camouflage'])
def test_items_are_clips_of_the_asked_size_in_0_1(style):
    fgr, pha, bgr = item(style, seq_length=5, size=48)
    assert fgr.shape == bgr.shape == (5, 3, 48, 48) and pha.shape == (5, 1, 48, 48)
    for part in (fgr, pha, bgr):
        assert part.dtype == torch.float32 and part.min() >= 0 and part.max() <= 1
    assert 0 < pha.mean() < 0.8 and not torch.equal(pha[0], pha[-1])  # a figure, and it moves


@pytest.mark.parametrize('style', ['plain', 'camouflage'])
def test_an_item_depends_only_on_seed_epoch_and_index(style):
    reference = item(style, seed=3, epoch=2, index=7)
    assert same(reference, item(style, seed=3, epoch=2, index=7))
    for other in (dict(seed=4, epoch=2, index=7), dict(seed=3, epoch=1, index=7), dict(seed=3, epoch=2, index=8)):
        assert not torch.equal(reference[1], item(style, **other)[1]), other


def test_no_two_items_of_an_epoch_alike_and_epochs_unlimited():
    dataset = SyntheticDataset('plain', 'train', 2, 32, seed=0)
    assert len(dataset) == TRAIN_CLIPS_PER_EPOCH
    mattes = torch.stack([dataset[i][1][0, 0] for i in range(24)]).flatten(1)
    distances = torch.cdist(mattes, mattes)
    assert (distances + torch.eye(24) * 1e9).min() > 1.0  # at least a few pixels of alpha apart
    backgrounds = torch.stack([dataset[i][2][0] for i in range(24)]).flatten(1)
    assert (torch.cdist(backgrounds, backgrounds) + torch.eye(24) * 1e9).min() > 1.0


def test_valid_and_test_are_fixed_sets_apart_from_training():
    valid = SyntheticDataset('plain', 'valid', 8, 32, seed=0)
    assert len(valid.clips) == EVAL_CLIPS and all(len(frames) == EVAL_FRAMES for frames in valid.frames)
    assert len(valid) == EVAL_CLIPS * EVAL_FRAMES // 8 and valid.index[:6] == [(0, 0), (0, 8), (0, 16), (0, 24),
                                                                                 (0, 32), (1, 0)]
    # The same for every training seed, and the same clip through its tiles.
    assert same(valid[5], SyntheticDataset('plain', 'valid', 8, 32, seed=9)[5])
    longer_tiles = SyntheticDataset('plain', 'valid', 16, 32, clips=1)[0]
    assert all(torch.equal(longer[8:16], tile) for longer, tile in zip(longer_tiles, valid[1]))
    # valid, test and training draw from different generator seeds: no clip of one is a clip of another.
    test = SyntheticDataset('plain', 'test', 8, 32, clips=4)
    train_mattes = [item(seed=seed, epoch=epoch, index=index, seq_length=8)[1][0]
                    for seed in (0, 1) for epoch in (0, 1) for index in range(4)]
    for clip in range(4):
        first_valid, first_test = valid[clip * 5][1][0], test[clip * 5][1][0]
        assert not torch.equal(first_valid, first_test)
        assert not any(torch.equal(first_valid, matte) or torch.equal(first_test, matte) for matte in train_mattes)


def test_camouflage_figures_are_cut_from_their_backgrounds_texture():
    """In camouflage the figure is cut from its background's texture: its colours are the background's, which
    a plain figure's are not."""
    def colour_gap(style: str) -> float:
        gaps = []
        for index in range(12):
            fgr, pha, bgr = item(style, index=index, seq_length=1, size=64)
            figure = fgr[0][:, pha[0, 0] > 0.99].T
            if len(figure) < 20:  # hidden behind decoys in this frame
                continue
            background = bgr[0].flatten(1).T
            nearest = torch.cdist(figure[::7], background[::5]).min(dim=1).values
            gaps.append(nearest.mean().item())
        return float(np.mean(gaps))

    assert colour_gap('camouflage') < 0.5 * colour_gap('plain')


def test_synthetic_names_take_no_folders():
    with pytest.raises(DatasetError, match='drawn in memory.*--dataset-name videomatte240k'):
        make_dataset('synthetic-camouflage', 'valid', 8, 32, videomatte_root='anywhere')
    with pytest.raises(DatasetError, match='16 pixels'):
        make_dataset('synthetic', 'train', 8, 8)
    dataset = make_dataset('synthetic', 'test', 4, 32, synthetic_clips=2, synthetic_frames=6)
    assert dataset.index == [(0, 0), (0, 4), (1, 0), (1, 4)] and len(dataset[1][0]) == 2


def test_the_camera_pans_in_some_clips_and_decoys_stay_with_the_background():
    """A still camera leaves a camouflage clip's background (decoys included) the same in every frame while the
    figure moves; a panning one moves it."""
    still, panning = 0, 0
    for index in range(20):
        _, pha, bgr = item('camouflage', index=index, seq_length=6, size=48)
        assert not torch.equal(pha[0], pha[-1])
        if torch.equal(bgr[0], bgr[-1]):
            still += 1
        else:
            panning += 1
            assert (bgr[0] - bgr[-1]).abs().mean() > 1e-3
    assert still >= 8 and panning >= 2


def test_camouflage_strength_blends_the_plain_figures_into_the_texture():
    """The strength is drawn per clip from the camouflage range: at 0 the figure and the decoys have plain
    appearances, at 1 none of it; the shapes and motion do not depend on it."""
    def figure(strength: float) -> tuple[torch.Tensor, torch.Tensor]:
        dataset = SyntheticDataset('camouflage', 'train', 2, 48, camouflage=(strength, strength))
        fgr, pha, bgr = dataset[3]
        return fgr[0] * (pha[0] > 0.99), pha, bgr

    (plain, plain_pha, plain_bgr), (half, half_pha, _), (full, full_pha, full_bgr) = figure(0), figure(0.5), figure(1)
    assert torch.equal(plain_pha, half_pha) and torch.equal(plain_pha, full_pha)
    assert torch.allclose(half, (plain + full) / 2, atol=2 / 255)
    assert not torch.allclose(plain, full, atol=0.1) and not torch.allclose(plain_bgr, full_bgr, atol=0.1)
    valid_plain = SyntheticDataset('camouflage', 'valid', 2, 48, clips=1, camouflage=(0.0, 0.0))[0]
    valid_full = SyntheticDataset('camouflage', 'valid', 2, 48, clips=1)[0]
    assert torch.equal(valid_plain[1], valid_full[1]) and not torch.equal(valid_plain[0], valid_full[0])
