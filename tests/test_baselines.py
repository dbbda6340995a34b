"""baselines.py: the empty matte and the causal median background, on clips whose answer is known."""
import pytest
import torch

import baselines


def moving_square_clip() -> tuple[torch.Tensor, torch.Tensor]:
    """A still grey background with a white 4x4 square moving 4 pixels a frame to the right: frames (6, 3, 8, 24),
    true alpha (6, 1, 8, 24) of the square."""
    frames = torch.full((6, 3, 8, 24), 0.25)
    alpha = torch.zeros(6, 1, 8, 24)
    for t in range(6):
        alpha[t, :, 2:6, 4 * t:4 * t + 4] = 1
    return frames * (1 - alpha) + alpha, alpha


def test_causal_median_background_uses_earlier_frames_only():
    frames, _ = moving_square_clip()
    background = baselines.causal_median_background(frames)
    assert torch.equal(background[0], frames[0]), 'frame 0 is its own background'
    # From frame 2 on, each pixel of the square's path has been covered in at most one earlier frame: the median of
    # three or more frames is the grey background everywhere.
    assert torch.equal(background[2:], torch.full_like(background[2:], 0.25))
    changed = frames.clone()
    changed[5] = 1
    assert torch.equal(baselines.causal_median_background(changed)[:5], background[:5]), 'causal'


def test_median_background_matte_finds_the_moving_square():
    frames, alpha = moving_square_clip()
    matte = baselines.median_background_matte(frames, threshold=0.5)
    assert matte[0].sum() == 0, 'frame 0 has no background of its own yet'
    assert torch.equal(matte[2:], alpha[2:])
    assert baselines.frame_mads(matte[2:], alpha[2:]) == [0.0] * 4
    assert baselines.median_background_matte(frames, threshold=0.8).sum() == 0, 'the square differs by 0.75'


def test_empty_matte_scores_the_true_alpha_mean():
    frames, alpha = moving_square_clip()
    mads = baselines.frame_mads(baselines.empty_matte(frames), alpha)
    assert mads == pytest.approx([16 / 192 * 1e3] * 6)


def test_choose_threshold_picks_the_lowest_mad():
    clip = moving_square_clip()
    threshold, mad = baselines.choose_threshold([clip], thresholds=(0.1, 0.5, 0.8))
    expected = sum(baselines.frame_mads(baselines.median_background_matte(clip[0], 0.1), clip[1])) / 6
    assert threshold == 0.1 and mad == expected  # 0.1 and 0.5 tie at frame 1's error; the first of equals wins
    assert baselines.choose_threshold([clip], thresholds=(0.8, 0.5))[0] == 0.5
