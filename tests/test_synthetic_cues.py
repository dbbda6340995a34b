"""The in-memory camouflage data carries no single-frame cue, and its training windows move as its test clips do.

A single frame of a camouflage clip shows two silhouettes alike, the figure's and the decoy's. If any rule that
looks at one frame only (which silhouette is larger, nearer the centre or an edge, whose head is higher, which one
the frame cuts) picked the figure more often than the decoy, a model could learn it instead of using motion or
memory: marking a silhouette by such a rule must do no better than a coin.
"""
from typing import NamedTuple

import numpy as np
import pytest
import torch

from dataset.synthetic import Clip, SyntheticDataset

SIZE = 64
# A rule tells the figure from the decoy if it does better than a coin that picks one of the two silhouettes wherever
# the rule marks one (and leaves the frame empty where the rule does). The coin, not the empty matte, is the level
# of no cue: where a semi-transparent edge of one silhouette lies over the other, marking either one is partly right,
# so a coin scores about 0.94 of the empty matte's MAD without knowing anything. Each sample is one frame of its own
# clip, so samples are independent; a rule's error per frame is 0 or about the two silhouettes' area, so its mean
# relative to the coin's has a standard error of about 1/sqrt(samples). A rule fails the test if it gains more than
# MARGIN of the coin's MAD and its gain is more than Z standard errors (one-sided p 0.0005 for each of the 10 rules:
# 0.005 for the family).
MARGIN, Z = 0.05, 3.3


class Silhouette(NamedTuple):
    area: float  # pixels of alpha
    off_centre: float  # horizontal distance of its centre of mass from the frame's centre, pixels
    top: int  # its highest row (0 at the top of the frame)
    cut: bool  # whether it touches the frame's left or right edge


def silhouette(alpha: np.ndarray) -> Silhouette:
    """What one frame shows of a silhouette; one the frame does not show is as far off the centre and as low as
    can be."""
    columns, area = alpha.sum(0), float(alpha.sum())
    rows = np.flatnonzero(alpha.max(1) > 0.5)
    return Silhouette(area, abs(float((columns * np.arange(SIZE)).sum()) / area - SIZE / 2) if area else SIZE,
                      int(rows[0]) if len(rows) else SIZE, bool(max(alpha[:, 0].max(), alpha[:, -1].max()) > 0.5))


def either(condition: bool, rule: int) -> int | None:
    return rule if condition else None


# Each rule looks at two silhouettes (a, b) and marks one of them (0: a, 1: b) or neither (None), also on a tie: the
# figure is always a, so a tie broken either way would favour one of them.
RULES = {
    'larger': lambda a, b: either(a.area != b.area, int(b.area > a.area)),
    'smaller': lambda a, b: either(a.area != b.area, int(b.area < a.area)),
    'larger, other under a quarter': lambda a, b: either(min(a.area, b.area) < max(a.area, b.area) / 4,
                                                         int(b.area > a.area)),
    'smaller, under a quarter': lambda a, b: either(min(a.area, b.area) < max(a.area, b.area) / 4,
                                                    int(b.area < a.area)),
    'nearer the centre': lambda a, b: either(a.off_centre != b.off_centre, int(b.off_centre < a.off_centre)),
    'nearer an edge': lambda a, b: either(a.off_centre != b.off_centre, int(b.off_centre > a.off_centre)),
    'head higher': lambda a, b: either(a.top != b.top, int(b.top < a.top)),
    'head lower': lambda a, b: either(a.top != b.top, int(b.top > a.top)),
    'cut by a side edge': lambda a, b: either(a.cut != b.cut, int(b.cut)),
    'whole, other cut': lambda a, b: either(a.cut != b.cut, int(a.cut)),
}


def silhouettes(clip: Clip, t: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame t's true matte (the figure's alpha) and the decoy's visible alpha, (S, S) in 0..1."""
    _, pha, _ = clip.render(t)
    (_, decoy, in_front), = clip.decoys_at(t)
    return pha, decoy if in_front else decoy * (1 - pha)


def train_windows(count: int, epoch: int = 0, step: int = 1) -> list[tuple[Clip, range]]:
    """The clips of `count` camouflage train items, and every step-th frame of their windows."""
    dataset = SyntheticDataset('camouflage', 'train', 8, SIZE)
    dataset.set_epoch(epoch)
    return [(clip, times[::step]) for clip, times in map(dataset.clip, range(count))]


def eval_clips(count: int, step: int = 1) -> list[tuple[Clip, range]]:
    """`count` camouflage test clips, and every step-th frame of them."""
    dataset = SyntheticDataset('camouflage', 'test', 8, SIZE, clips=count)
    return [(dataset.eval_clip(c), range(0, len(dataset.frames[c]), step)) for c in range(count)]


def rule_gains(samples: list[tuple[Clip, range]]) -> tuple[dict[str, tuple[float, float]], float, int]:
    """Each rule's gain over the coin on the frames that show a silhouette: (its MAD relative to the coin's, the z
    score of its per-frame error minus the coin's: negative where the rule does better); the coin's MAD relative to
    the empty matte's when it picks in every frame; the number of frames."""
    errors, coins, empty, always_coin = {name: [] for name in RULES}, {name: [] for name in RULES}, [], []
    for clip, times in samples:
        for t in times:
            figure, decoy = silhouettes(clip, t)
            if not (figure.any() or decoy.any()):
                continue
            marks = (0.0, np.abs(decoy - figure).mean(), figure.mean())  # marking the figure, the decoy, neither
            empty.append(marks[2])
            always_coin.append((marks[0] + marks[1]) / 2)
            pair = silhouette(figure), silhouette(decoy)
            for name, rule in RULES.items():
                mark = rule(*pair)
                errors[name].append(marks[2 if mark is None else mark])
                coins[name].append(marks[2] if mark is None else (marks[0] + marks[1]) / 2)
    gains = {}
    for name, error in errors.items():
        difference = np.array(error) - np.array(coins[name])
        gains[name] = (float(np.sum(error) / np.sum(coins[name])),
                       float(difference.mean() / (difference.std(ddof=1) / np.sqrt(len(difference)))))
    return gains, float(np.sum(always_coin) / np.sum(empty)), len(empty)


def assert_no_rule_beats_the_coin(gains: dict[str, tuple[float, float]], coin: float) -> None:
    beating = {name: gain for name, gain in gains.items() if gain[0] < 1 - MARGIN and gain[1] < -Z}
    assert not beating, f'single-frame rules that tell the figure from the decoy (MAD relative to a coin, z): {beating}'
    assert 0.85 < coin <= 1, 'a coin scores about the empty matte: the two silhouettes show alike much'


def pan_samples() -> list[tuple[Clip, range]]:
    """One frame of each train window and two of each test clip whose camera pans, of 2,000 and 600 clips."""
    windows = [window for window in train_windows(2000, epoch=1, step=8) if window[0].pans]
    clips = [window for window in eval_clips(600, step=20) if window[0].pans]
    return windows + clips


@pytest.mark.slow
def test_no_single_frame_rule_tells_the_figure_from_the_decoy():
    gains, coin, frames = rule_gains(train_windows(1500, step=8) + eval_clips(300, step=40))
    assert frames > 1500
    assert_no_rule_beats_the_coin(gains, coin)


@pytest.mark.slow
def test_no_single_frame_rule_tells_the_figure_from_the_decoy_when_the_camera_pans():
    gains, coin, frames = rule_gains(pan_samples())
    assert frames > 700
    assert_no_rule_beats_the_coin(gains, coin)


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """The two-sample Kolmogorov-Smirnov statistic: the largest gap between the two empirical CDFs."""
    values = np.concatenate([a, b])
    cdf = [np.searchsorted(np.sort(x), values, side='right') / len(x) for x in (a, b)]
    return float(np.abs(cdf[0] - cdf[1]).max())


def speeds(samples: list[tuple[Clip, range]]) -> tuple[np.ndarray, np.ndarray]:
    """Per sample, the camera's and the figure's mean horizontal speed over its frames, pixels per frame."""
    camera, figure = [], []
    for clip, times in samples:
        t = np.array(times)
        camera.append(np.abs(np.diff([clip.camera_at(s) for s in t])).mean())
        figure.append(np.abs(np.diff([clip.figure.centre(clip.speed * s) for s in t])).mean())
    return np.array(camera), np.array(figure)


def test_training_windows_move_as_test_clips_do():
    """Camera and figure speeds per frame have one distribution over train windows and over 8-frame windows of
    test clips. With 200 samples of each, the KS statistic of two samples of one distribution exceeds 0.195 with
    probability 0.001; so does the gap between panning fractions (0.3) exceed 0.15."""
    count = 200
    train = train_windows(count)
    test = [(clip, range(start, start + 8)) for (clip, _), start in zip(eval_clips(count), np.arange(count) % 33)]
    (train_camera, train_figure), (test_camera, test_figure) = speeds(train), speeds(test)
    assert abs((train_camera > 0).mean() - (test_camera > 0).mean()) < 0.15
    assert ks_statistic(train_camera, test_camera) < 0.195
    assert ks_statistic(train_figure, test_figure) < 0.195
    medians = np.median(train_camera[train_camera > 0]), np.median(test_camera[test_camera > 0])
    assert abs(medians[0] / medians[1] - 1) < 0.25, medians


def test_camera_pans_tells_the_clips_whose_background_moves():
    dataset = SyntheticDataset('camouflage', 'test', 40, 32, clips=12)
    pans = [dataset.camera_pans(c) for c in range(12)]
    assert 0 < sum(pans) < 12
    for c, pan in enumerate(pans):
        clip = dataset.eval_clip(c)
        assert clip.pans == pan == (clip.camera_at(1) != clip.camera_at(0))
        bgr = dataset[c][2]
        assert torch.equal(bgr[0], bgr[-1]) != pan


def test_the_camera_pans_sideways_only():
    """A panning clip's background 4 frames on is its first frame's moved sideways by the camera's motion: the
    best match over shifts of up to 6 pixels either way has no vertical shift."""
    dataset = SyntheticDataset('plain', 'test', 1, SIZE, clips=20)
    clip = dataset.eval_clip(next(c for c in range(20) if dataset.camera_pans(c)))
    first, later = clip.render(0)[2], clip.render(4)[2]
    inner = later[8:-8, 8:-8]
    gaps = {(dy, dx): np.abs(first[8 + dy:SIZE - 8 + dy, 8 + dx:SIZE - 8 + dx] - inner).mean()
            for dy in range(-6, 7) for dx in range(-6, 7)}
    assert min(gaps, key=gaps.get) == (0, round(clip.camera_at(4) - clip.camera_at(0)))


def test_train_items_are_windows_of_test_length_clips():
    dataset = SyntheticDataset('camouflage', 'train', 8, 32, seed=2)
    dataset.set_epoch(3)
    starts = set()
    for index in range(12):
        clip, times = dataset.clip(index)
        assert clip.frames == 40 and len(times) == 8 and 0 <= times[0] <= 32
        starts.add(times[0])
        if index < 2:
            fgr, pha, bgr = dataset[index]
            frames = [clip.render(t) for t in times]
            assert torch.equal(pha[:, 0], torch.from_numpy(np.stack([p for _, p, _ in frames])))
            assert torch.equal(bgr, torch.from_numpy(np.stack([b for _, _, b in frames])).permute(0, 3, 1, 2))
    assert len(starts) > 4
    assert SyntheticDataset('plain', 'train', 50, 32).clip(0)[0].frames == 50  # never shorter than a window


def test_decoys_are_composited_in_float_as_the_figure_is():
    """The background with the decoy in it and the figure's alpha where a decoy hides it are not rounded to
    1/255 steps, as the figure's composite (fgr * pha + bgr * (1 - pha), in float) is not."""
    dataset = SyntheticDataset('camouflage', 'train', 1, SIZE)
    for index in range(20):
        clip, (t,) = dataset.clip(index)
        _, pha, bgr = clip.render(t)
        (_, decoy, in_front), = clip.decoys_at(t)
        assert pha.dtype == bgr.dtype == np.float32
        soft = (decoy > 0.05) & (decoy < 0.95)
        assert soft.any()
        assert np.abs(bgr[soft] * 255 - np.round(bgr[soft] * 255)).max() > 0.01
        if in_front and (soft & (pha > 0.05)).any():
            hidden = pha[soft & (pha > 0.05)] * 255
            assert np.abs(hidden - np.round(hidden)).max() > 0.01
            return
    pytest.fail('no decoy in front of its figure among 20 clips')
