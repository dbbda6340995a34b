"""Motion augmentation and frame samplers: alignment, ranges, determinism, easing curves."""
import math

import cv2
import pytest
import torch
from kornia.enhance import adjust_hue
from kornia.geometry.transform import warp_affine

from dataset.augmentation import (CURVES, MotionAugmentation, TrainFrameSampler, ValidFrameSampler, ease,
                                  rotate_hue, train_augmentation, valid_augmentation, warp_frames)


def sequence(steps: int = 4, height: int = 40, width: int = 72) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A foreground that is white exactly where alpha is 1 (a soft-edged disc), and a random background."""
    y, x = torch.meshgrid(torch.arange(height), torch.arange(width), indexing='ij')
    pha = (12 - ((x - 30) ** 2 + (y - 18) ** 2).sqrt()).clamp(0, 1)[None, None].expand(steps, 1, -1, -1)
    fgr = pha.expand(-1, 3, -1, -1)
    bgr = torch.rand(3, height + 6, width + 10, generator=torch.Generator().manual_seed(1)).expand(steps, -1, -1, -1)
    return fgr.contiguous(), pha.contiguous(), bgr


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize('name, mode', CURVES + [('linear', 'in')])
def test_easing_curves_go_from_0_to_1(name, mode):
    values = ease(torch.linspace(0, 1, 11), name, mode)
    assert torch.isfinite(values).all()
    assert values[0].item() == pytest.approx(0, abs=1e-6) and values[-1].item() == pytest.approx(1, abs=1e-6)


def test_easing_curve_values():
    t = torch.tensor([0.25, 0.5])
    torch.testing.assert_close(ease(t, 'quad', 'in'), torch.tensor([0.0625, 0.25]))
    torch.testing.assert_close(ease(t, 'quad', 'out'), torch.tensor([0.4375, 0.75]))
    torch.testing.assert_close(ease(t, 'quad', 'in_out'), torch.tensor([0.125, 0.5]))
    assert ease(torch.tensor([0.2]), 'back', 'in').item() < 0  # Back overshoots below the start


@pytest.mark.parametrize('seed', range(6))
def test_geometry_keeps_alpha_aligned_with_foreground(seed):
    # Every change that touches alpha is on; noise, colour and grayscale change only the foreground.
    augmentation = MotionAugmentation(32, prob_fgr_affine=1, prob_bgr_affine=1, prob_noise=0, prob_color_jitter=0,
                                      prob_grayscale=0, prob_sharpness=1, prob_blur=1, prob_hflip=1, prob_pause=1)
    fgr, pha, bgr = augmentation(*sequence(), generator(seed))
    assert fgr.shape == (4, 3, 32, 32) and pha.shape == (4, 1, 32, 32) and bgr.shape == (4, 3, 32, 32)
    assert pha.max() > 0.5, 'the disc left the crop: the test would prove nothing'
    torch.testing.assert_close(fgr, pha.expand(-1, 3, -1, -1), atol=1e-5, rtol=0)


def test_foreground_motion_moves_the_figure_over_time():
    augmentation = MotionAugmentation(32, prob_fgr_affine=1, prob_bgr_affine=0, prob_noise=0, prob_color_jitter=0,
                                      prob_grayscale=0, prob_sharpness=0, prob_blur=0, prob_hflip=0, prob_pause=0)
    _, pha, _ = augmentation(*sequence(), generator(0))
    assert (pha[0] - pha[-1]).abs().max() > 0.1


@pytest.mark.parametrize('seed', range(8))
@pytest.mark.parametrize('steps', [1, 5])
def test_train_preset_shapes_dtypes_and_ranges(seed, steps):
    fgr, pha, bgr = train_augmentation(24)(*sequence(steps), generator(seed))
    for image, channels in ((fgr, 3), (pha, 1), (bgr, 3)):
        assert image.shape == (steps, channels, 24, 24) and image.dtype == torch.float32
        assert image.min() >= 0 and image.max() <= 1


def test_train_preset_is_reproducible_from_the_generator_seed():
    first = train_augmentation(32)(*sequence(), generator(5))
    again = train_augmentation(32)(*sequence(), generator(5))
    other = train_augmentation(32)(*sequence(), generator(6))
    for a, b in zip(first, again):
        assert torch.equal(a, b)
    assert any(not torch.equal(a, b) for a, b in zip(first, other))


def test_valid_preset_is_a_deterministic_centre_crop():
    fgr, pha, bgr = sequence(height=32, width=48)
    out = [valid_augmentation(32)(fgr, pha, bgr, generator(seed)) for seed in (0, 1)]
    for a, b in zip(*out):
        assert torch.equal(a, b)
    torch.testing.assert_close(out[0][0], fgr[..., 8:40], atol=1e-4, rtol=0)
    torch.testing.assert_close(out[0][1], pha[..., 8:40], atol=1e-4, rtol=0)


def test_valid_preset_without_size_keeps_the_frames():
    fgr, pha, bgr = sequence()
    out_fgr, out_pha, out_bgr = valid_augmentation(None)(fgr, pha, bgr, generator(0))
    torch.testing.assert_close(out_fgr, fgr, atol=1e-4, rtol=0)
    assert out_pha.shape == pha.shape and out_bgr.shape == fgr.shape


@pytest.mark.parametrize('seed', range(20))
def test_train_sampler_plays_one_speed_forward_inside_the_clip(seed):
    frames = TrainFrameSampler(max_speed=10)(50, 0, 8, generator(seed))
    steps = {b - a for a, b in zip(frames, frames[1:])}
    assert len(frames) == 8 and len(steps) == 1 and 1 <= steps.pop() <= 7
    assert 0 <= frames[0] and frames[-1] < 50


def test_train_sampler_uses_several_speeds():
    speeds = {(lambda f: f[1] - f[0])(TrainFrameSampler()(100, 0, 4, generator(seed))) for seed in range(40)}
    assert len(speeds) > 3


def test_train_sampler_ping_pongs_clips_shorter_than_the_sequence():
    assert TrainFrameSampler()(3, 0, 8, generator(0)) == [0, 1, 2, 1, 0, 1, 2, 1]
    assert TrainFrameSampler()(1, 0, 3, generator(0)) == [0, 0, 0]


def test_valid_sampler_tiles_in_order():
    assert ValidFrameSampler()(10, 8, 4, generator(0)) == [8, 9]
    assert ValidFrameSampler()(10, 0, 4, generator(0)) == [0, 1, 2, 3]


@pytest.mark.parametrize('shared', [True, False])
def test_shared_appearance_gives_figure_and_background_the_same_scale_and_colour(shared):
    texture = torch.rand(1, 3, 40, 72, generator=generator(2)).expand(4, -1, -1, -1).contiguous()
    opaque = torch.ones(4, 1, 40, 72)
    augment = MotionAugmentation(32, prob_fgr_affine=0, prob_bgr_affine=0, prob_noise=0, prob_color_jitter=1,
                                 prob_grayscale=0, prob_sharpness=0, prob_blur=0, prob_hflip=0, prob_pause=0,
                                 random_crop=False, aspect_ratio_range=(1, 1), shared_appearance=shared)
    for seed in range(5):
        fgr, pha, bgr = augment(texture, opaque, texture, generator(seed))
        # Where the (still-scaled) figure covers the frame, the same texture with the same changes looks the same,
        # up to the contrast change, which pulls towards each image's own mean (the figure's includes its padding).
        inside = pha.expand_as(fgr) > 0.999
        assert inside.float().mean() > 0.2
        difference = (fgr[inside] - bgr[inside]).abs().max().item()
        assert difference < 0.05 if shared else difference > 0.2


@pytest.mark.parametrize('border, padding', [(cv2.BORDER_CONSTANT, 'zeros'), (cv2.BORDER_REFLECT_101, 'reflection')])
def test_warp_frames_matches_kornia_warp_affine(border, padding):
    """OpenCV's warp with the same pixel matrices and borders as kornia's grid sampling (align_corners=True),
    up to OpenCV's 1/32-pixel sample positions."""
    images = torch.rand(3, 4, 30, 50, generator=generator(3))
    rotation = torch.tensor([[0.9, -0.3, 6.0], [0.3, 0.9, -4.0], [0, 0, 1]])
    matrices = torch.stack([torch.eye(3), torch.tensor([[1, 0, 2.5], [0, 1, -1.25], [0, 0, 1]]), rotation])
    expected = warp_affine(images, matrices[:, :2], (24, 40), padding_mode=padding, align_corners=True)
    warped = warp_frames(images, matrices, (24, 40), border)
    torch.testing.assert_close(warped[0], images[0, :, :24, :40])
    assert (warped - expected).abs().mean() < 2e-3 and (warped - expected).abs().max() < 0.05


def test_rotate_hue_matches_kornia_adjust_hue():
    image = torch.rand(4, 3, 20, 30, generator=generator(4))
    turns = torch.tensor([0.0, 0.01, -0.2, 0.45])
    expected = adjust_hue(image, turns * 2 * math.pi)
    torch.testing.assert_close(rotate_hue(image, turns), expected, atol=1e-5, rtol=0)


def test_geometry_keeps_uint8_and_appearance_continues_from_the_generator_state():
    fgr, pha, bgr = ((image * 255).round().to(torch.uint8) for image in sequence())
    augmentation = MotionAugmentation(32, prob_fgr_affine=1, prob_bgr_affine=1, prob_noise=1, prob_color_jitter=1,
                                      prob_grayscale=0, prob_sharpness=1, prob_blur=1, prob_hflip=0.5, prob_pause=1)
    expected = augmentation(fgr, pha, bgr, generator(5))
    first = generator(5)
    warped = augmentation.geometry(fgr, pha, bgr, first)
    assert all(image.dtype == torch.uint8 and image.shape[-2:] == (32, 32) for image in warped)
    continued = torch.Generator()
    continued.set_state(first.get_state())  # as the state travels from a DataLoader worker with its uint8 frames
    for got, want in zip(augmentation.appearance(*warped, continued), expected):
        assert got.dtype == torch.float32 and torch.equal(got, want)
