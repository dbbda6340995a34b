"""Matting without learning, the floor a learned model must clear: the empty matte and the causal median background.

    empty_matte(frames)                      alpha 0 everywhere: the score of predicting no person
    median_background_matte(frames, t)       alpha 1 where a frame differs from the per-pixel median of the frames
                                             so far by more than t: a background rebuilt from earlier frames, with
                                             no learning, as the ConvLSTM memory is meant to rebuild it
    choose_threshold(clips, thresholds)      the threshold of lowest MAD on a set of clips (the valid split)

Both are causal: frame t's matte uses frames 0..t only, as the recurrent model does.
"""
import torch
from torch import Tensor

import metrics

THRESHOLDS = tuple(round(0.02 * step, 2) for step in range(1, 51))  # 0.02 .. 1, in units of 0..1 intensity


def empty_matte(frames: Tensor) -> Tensor:
    """frames (T, 3, H, W) -> alpha (T, 1, H, W) of zeros."""
    return frames.new_zeros(frames.shape[0], 1, *frames.shape[2:])


def causal_median_background(frames: Tensor) -> Tensor:
    """frames (T, 3, H, W) in 0..1 -> backgrounds (T, 3, H, W): at t, the per-pixel, per-channel median of frames
    0..t (for an even count the lower of the two middle values, as torch.median gives). Whatever stays put for more
    than half the frames so far (a resting background, a still decoy) is in it; a figure that moves is not."""
    return torch.stack([frames[:t + 1].median(dim=0).values for t in range(frames.shape[0])])


def background_difference(frames: Tensor) -> Tensor:
    """frames (T, 3, H, W) in 0..1 -> (T, 1, H, W) in 0..1: the largest difference over the channels between each
    frame and its causal_median_background."""
    return (frames - causal_median_background(frames)).abs().amax(dim=1, keepdim=True)


def median_background_matte(frames: Tensor, threshold: float) -> Tensor:
    """frames (T, 3, H, W) in 0..1 -> alpha (T, 1, H, W) in {0, 1}: 1 where some channel of the frame differs from
    causal_median_background by more than threshold. Frame 0 is its own background, so its alpha is 0."""
    return (background_difference(frames) > threshold).to(frames.dtype)


def frame_mads(pred_pha: Tensor, true_pha: Tensor) -> list[float]:
    """pred_pha, true_pha (T, 1, H, W) in 0..1 -> the MAD (x1e3) of each frame."""
    return [metrics.mad(pred[0], true[0]) for pred, true in zip(pred_pha, true_pha)]


def choose_threshold(clips: list[tuple[Tensor, Tensor]], thresholds: tuple[float, ...] = THRESHOLDS
                     ) -> tuple[float, float]:
    """clips: (frames (T, 3, H, W), true alpha (T, 1, H, W)) in 0..1 -> (threshold, its MAD x1e3 over all frames)
    of the threshold in `thresholds` whose median_background_matte has the lowest MAD (the first of equals)."""
    differences = [(background_difference(frames), true_pha) for frames, true_pha in clips]
    scores = {}
    for threshold in thresholds:
        mads = [mad for difference, true_pha in differences
                for mad in frame_mads((difference > threshold).to(true_pha.dtype), true_pha)]
        scores[threshold] = sum(mads) / len(mads)
    best = min(thresholds, key=lambda threshold: scores[threshold])
    return best, scores[best]
