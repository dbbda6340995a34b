"""Motion augmentation of matting sequences, and the frame samplers.

In the spirit of RobustVideoMatting's augmentation: a random change does not jump from frame to frame
but moves from a start value to an end value over the sequence along an easing curve, so augmented
clips move like filmed ones. All randomness comes from the torch.Generator passed in, never from global
state, so an item is reproducible from its generator's seed alone.
"""
import math

import cv2
import numpy as np
import torch
from kornia.enhance import adjust_contrast_with_mean_subtraction, adjust_hue, adjust_saturation_with_gray_subtraction
from kornia.geometry.transform import get_affine_matrix2d
from torch.nn import functional as F
from torchvision.transforms.v2 import functional as TF


def _bounce_out(t: torch.Tensor) -> torch.Tensor:
    n, d = 7.5625, 2.75
    return torch.where(t < 1 / d, n * t ** 2,
                       torch.where(t < 2 / d, n * (t - 1.5 / d) ** 2 + 0.75,
                                   torch.where(t < 2.5 / d, n * (t - 2.25 / d) ** 2 + 0.9375,
                                               n * (t - 2.625 / d) ** 2 + 0.984375)))


# Penner's easing curves in their 'in' form; 'out' and 'in_out' are derived from them in ease().
EASE_IN = {
    'linear': lambda t: t,
    'back': lambda t: 2.70158 * t ** 3 - 1.70158 * t ** 2,
    'bounce': lambda t: 1 - _bounce_out(1 - t),
    'circular': lambda t: 1 - torch.sqrt(1 - t ** 2),
    'cubic': lambda t: t ** 3,
    'exponential': lambda t: torch.where(t == 0, 0.0, 2 ** (10 * t - 10)),
    'elastic': lambda t: torch.where((t == 0) | (t == 1), t,
                                     -(2 ** (10 * t - 10)) * torch.sin((10 * t - 10.75) * 2 * math.pi / 3)),
    'quad': lambda t: t ** 2,
    'quartic': lambda t: t ** 4,
    'quintic': lambda t: t ** 5,
    'sine': lambda t: 1 - torch.cos(t * math.pi / 2),
}
CURVES = [(name, mode) for name in EASE_IN if name != 'linear' for mode in ('in', 'out', 'in_out')]


def ease(t: torch.Tensor, name: str, mode: str) -> torch.Tensor:
    """Easing curve `name` (a key of EASE_IN) in `mode` 'in', 'out' or 'in_out', at progress t in 0..1.

    Every curve is 0 at t = 0 and 1 at t = 1; Back and Elastic overshoot in between.
    """
    curve = EASE_IN[name]
    if mode == 'in':
        return curve(t)
    if mode == 'out':
        return 1 - curve(1 - t)
    return torch.where(t < 0.5, curve((2 * t).clamp(max=1)) / 2, 1 - curve((2 - 2 * t).clamp(max=1)) / 2)


def random_progress(generator: torch.Generator, steps: int) -> torch.Tensor:
    """Progress (steps,) from 0 at the first frame to 1 at the last along a random easing curve.

    Linear one time in five, otherwise any of CURVES, as RobustVideoMatting.
    """
    t = torch.linspace(0, 1, steps)
    if uniform(generator) < 0.2:
        return t
    name, mode = CURVES[randint(generator, len(CURVES))]
    return ease(t, name, mode)


def uniform(generator: torch.Generator, low: float = 0.0, high: float = 1.0) -> float:
    return low + (high - low) * torch.rand(1, generator=generator).item()


def randint(generator: torch.Generator, high: int) -> int:
    """A random integer in 0..high-1."""
    return int(torch.randint(high, (1,), generator=generator))


STILL = torch.tensor([0.0, 0, 0, 1, 0])  # affine parameters (see random_affine_params) of no change


class MotionAugmentation:
    """Random motion and appearance changes of a sequence, then a crop resized to size x size.

    Geometry: the foreground (with its alpha) and the background each get an optional moving affine
    transform (rotation +-10 degrees, translation +-10 %, scale 0.9..1.1, shear +-5 degrees, eased from a
    start to an end pose), sometimes a shared one (camera motion), a still affine (foreground scale
    0.5..1, background 1..1.5), a crop of aspect ratio within aspect_ratio_range resized to the output
    size, and a horizontal flip. They are composed into one matrix per frame and applied in one bilinear
    warp, and the foreground and alpha are warped with the same matrices, so alpha stays aligned with its
    foreground.
    Appearance: noise, colour jitter, grayscale, sharpness, blur and pause, as RobustVideoMatting.
    Each prob_* is the probability of that change per sequence.
    shared_appearance gives foreground and background the same still affine (so the same texture scale) and
    the same colour jitter: for data whose single frames must stay ambiguous (camouflage data on disk), where a
    scale or colour difference between figure and background would be a cue that real footage does not give.
    """

    def __init__(self, size: int | None, prob_fgr_affine: float, prob_bgr_affine: float, prob_noise: float,
                 prob_color_jitter: float, prob_grayscale: float, prob_sharpness: float, prob_blur: float,
                 prob_hflip: float, prob_pause: float, static_affine: bool = True, random_crop: bool = True,
                 aspect_ratio_range: tuple[float, float] = (0.9, 1.1), shared_appearance: bool = False):
        self.size = size
        self.prob_fgr_affine = prob_fgr_affine
        self.prob_bgr_affine = prob_bgr_affine
        self.prob_noise = prob_noise
        self.prob_color_jitter = prob_color_jitter
        self.prob_grayscale = prob_grayscale
        self.prob_sharpness = prob_sharpness
        self.prob_blur = prob_blur
        self.prob_hflip = prob_hflip
        self.prob_pause = prob_pause
        self.static_affine = static_affine
        self.random_crop = random_crop
        self.aspect_ratio_range = aspect_ratio_range
        self.shared_appearance = shared_appearance

    def __call__(self, fgr: torch.Tensor, pha: torch.Tensor, bgr: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """fgr (T, 3, H, W), pha (T, 1, H, W) and bgr (T or 1, 3, H', W'), all uint8 in 0..255 or all float in
        0..1, to float32 (T, C, size, size), or (T, C, H, W) when size is None, in 0..1: geometry() then
        appearance(), drawing from `generator` in that order."""
        return self.appearance(*self.geometry(fgr, pha, bgr, generator), generator)

    def geometry(self, fgr: torch.Tensor, pha: torch.Tensor, bgr: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The motion, crop and flip of __call__'s inputs, in their own dtype: (T, C, size, size), or (T, C, H, W)
        when size is None. uint8 stays uint8 (a quarter of float32's bytes to send from a DataLoader worker)."""
        steps, _, height, width = fgr.shape
        out_size = (self.size, self.size) if self.size else (height, width)
        fgr_matrix, bgr_matrix = self._matrices(steps, fgr.shape[-2:], bgr.shape[-2:], out_size, generator)
        fgr = warp_frames(fgr, fgr_matrix, out_size, cv2.BORDER_CONSTANT)
        pha = warp_frames(pha, fgr_matrix, out_size, cv2.BORDER_CONSTANT)
        bgr = warp_frames(bgr, bgr_matrix, out_size, cv2.BORDER_REFLECT_101)
        return fgr, pha, bgr

    def appearance(self, fgr: torch.Tensor, pha: torch.Tensor, bgr: torch.Tensor,
                   generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The appearance changes of geometry()'s outputs (uint8 in 0..255 or float in 0..1, all three (T, C, S, S)
        on any one device) -> float32 in 0..1 on that device. `generator` is a CPU generator in the state geometry()
        left it: its state can travel with the uint8 frames, so that another process or device continues it."""
        steps = len(fgr)
        fgr, pha, bgr = (image.float().div_(255) if image.dtype == torch.uint8 else image.float()
                         for image in (fgr, pha, bgr))
        if uniform(generator) < self.prob_noise:
            fgr, bgr = motion_noise(generator, fgr, bgr)
        if self.shared_appearance:
            if uniform(generator) < self.prob_color_jitter:
                jitter_state = generator.get_state()  # replayed, so that both get the same jitter
                fgr = motion_color_jitter(generator, fgr)
                bgr = motion_color_jitter(generator.set_state(jitter_state), bgr)
        else:
            if uniform(generator) < self.prob_color_jitter:
                fgr = motion_color_jitter(generator, fgr)
            if uniform(generator) < self.prob_color_jitter:
                bgr = motion_color_jitter(generator, bgr)
        if uniform(generator) < self.prob_grayscale:
            fgr = TF.rgb_to_grayscale(fgr, num_output_channels=3)
            bgr = TF.rgb_to_grayscale(bgr, num_output_channels=3)
        if uniform(generator) < self.prob_sharpness:
            sharpness = uniform(generator, 0, 8)
            fgr, pha, bgr = (TF.adjust_sharpness(image, sharpness) for image in (fgr, pha, bgr))
        if uniform(generator) < self.prob_blur / 3:
            fgr, pha = motion_blur(generator, fgr, pha)
        if uniform(generator) < self.prob_blur / 3:
            bgr, = motion_blur(generator, bgr)
        if uniform(generator) < self.prob_blur / 3:
            fgr, pha, bgr = motion_blur(generator, fgr, pha, bgr)
        if steps > 1 and uniform(generator) < self.prob_pause:
            fgr, pha, bgr = motion_pause(generator, fgr, pha, bgr)
        return fgr, pha, bgr

    def _matrices(self, steps: int, fgr_size: tuple[int, int], bgr_size: tuple[int, int],
                  out_size: tuple[int, int], generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-frame (T, 3, 3) pixel matrices from the foreground and from the background to the output."""
        fgr_motion = bgr_motion = camera = STILL.expand(steps, 5)
        fgr_still = bgr_still = STILL
        if uniform(generator) < self.prob_fgr_affine:
            fgr_motion = motion_params(generator, steps)
        if uniform(generator) < self.prob_bgr_affine / 2:
            bgr_motion = motion_params(generator, steps)
        if uniform(generator) < self.prob_bgr_affine / 2:
            camera = motion_params(generator, steps)
        if self.static_affine:
            fgr_still = random_affine_params(generator, (0.5, 1))
            bgr_still = fgr_still if self.shared_appearance else random_affine_params(generator, (1, 1.5))
        matrices = []
        for size, motion, still in ((fgr_size, fgr_motion, fgr_still), (bgr_size, bgr_motion, bgr_still)):
            # One batched call for the three transforms: kornia's per-call overhead is most of its cost at this size.
            still_matrix, camera_matrix, motion_matrix = affine_matrix(
                torch.cat([still[None], camera, motion]), size).split([1, steps, steps])
            matrix = self._crop(size, out_size, generator) @ still_matrix @ camera_matrix @ motion_matrix
            if uniform(generator) < self.prob_hflip:
                matrix = hflip_matrix(out_size[1]) @ matrix
            matrices.append(matrix)
        return matrices[0], matrices[1]

    def _crop(self, in_size: tuple[int, int], out_size: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
        """(3, 3) matrix taking the largest window of the output's aspect ratio (times a random factor in
        aspect_ratio_range) to the output size; the window at a random place, or centred."""
        (in_h, in_w), (out_h, out_w) = in_size, out_size
        aspect = out_w / out_h * uniform(generator, *self.aspect_ratio_range)
        w, h = min(in_w, in_h * aspect), min(in_h, in_w / aspect)
        if self.random_crop:
            x0, y0 = uniform(generator, 0, in_w - w), uniform(generator, 0, in_h - h)
        else:
            # Whole pixels, so that an unscaled centre crop samples pixel centres instead of blending neighbours.
            x0, y0 = (in_w - w) // 2, (in_h - h) // 2
        sx, sy = out_w / w, out_h / h
        # Pixel centres sit at integer coordinates: map the window's edges, not its first and last centres.
        return torch.tensor([[sx, 0, (0.5 - x0) * sx - 0.5], [0, sy, (0.5 - y0) * sy - 0.5], [0, 0, 1]])


def train_augmentation(size: int | None) -> MotionAugmentation:
    """The training preset: RobustVideoMatting's VideoMatte probabilities."""
    return MotionAugmentation(size, prob_fgr_affine=0.3, prob_bgr_affine=0.3, prob_noise=0.1, prob_color_jitter=0.3,
                              prob_grayscale=0.02, prob_sharpness=0.1, prob_blur=0.02, prob_hflip=0.5, prob_pause=0.03)


def valid_augmentation(size: int | None) -> MotionAugmentation:
    """The validation preset: no random change, only the centred square crop (deterministic)."""
    return MotionAugmentation(size, prob_fgr_affine=0, prob_bgr_affine=0, prob_noise=0, prob_color_jitter=0,
                              prob_grayscale=0, prob_sharpness=0, prob_blur=0, prob_hflip=0, prob_pause=0,
                              static_affine=False, random_crop=False, aspect_ratio_range=(1, 1))


def warp_frames(images: torch.Tensor, matrices: torch.Tensor, size: tuple[int, int], border: int) -> torch.Tensor:
    """images (T or 1, C, H, W), C <= 4, uint8 in 0..255 or float in 0..1, each warped bilinearly by its (T, 3, 3)
    pixel matrix (input to output; pixel centres at integers) to size (h, w) -> (T, C, h, w): uint8 in 0..255 for
    uint8 images, else float32 in 0..1.
    Outside the input: zeros (cv2.BORDER_CONSTANT) or the mirror image (cv2.BORDER_REFLECT_101).

    OpenCV's warp on the frames' own dtype, because it is several times faster than grid sampling on the CPU, and
    uint8 frames become float only at the (smaller) output size, in MotionAugmentation.appearance.
    """
    height, width = size
    frames = images.permute(0, 2, 3, 1).numpy()
    warped = np.empty((len(matrices), height, width, frames.shape[-1]), frames.dtype)
    for t, matrix in enumerate(matrices.double().numpy()):
        frame = np.ascontiguousarray(frames[t if len(frames) > 1 else 0])
        # OpenCV drops the channel axis of single-channel images: reshape puts it back.
        warped[t] = cv2.warpAffine(frame, matrix[:2], (width, height), flags=cv2.INTER_LINEAR,
                                   borderMode=border).reshape(height, width, -1)
    warped = torch.from_numpy(warped).permute(0, 3, 1, 2)
    return warped if images.dtype == torch.uint8 else warped.float().contiguous()


def random_affine_params(generator: torch.Generator, scale_range: tuple[float, float]) -> torch.Tensor:
    """(5,): rotation in degrees, x and y translation as fractions of the size, scale, x shear in degrees."""
    return torch.tensor([uniform(generator, -10, 10), uniform(generator, -0.1, 0.1), uniform(generator, -0.1, 0.1),
                         uniform(generator, *scale_range), uniform(generator, -5, 5)])


def motion_params(generator: torch.Generator, steps: int) -> torch.Tensor:
    """(T, 5) affine parameters moving from one random pose to another along a random easing curve."""
    start = random_affine_params(generator, (0.9, 1.1))
    end = random_affine_params(generator, (0.9, 1.1))
    return start + (end - start) * random_progress(generator, steps)[:, None]


def affine_matrix(params: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, 3, 3) pixel matrices about the image centre from (N, 5) random_affine_params-style rows."""
    height, width = size
    n = len(params)
    translation = params[:, 1:3] * torch.tensor([width, height])
    centre = torch.tensor([(width - 1) / 2, (height - 1) / 2]).expand(n, 2)
    scale = params[:, 3:4].expand(n, 2)
    return get_affine_matrix2d(translation, centre, scale, params[:, 0], torch.deg2rad(params[:, 4]), torch.zeros(n))


def hflip_matrix(width: int) -> torch.Tensor:
    return torch.tensor([[-1.0, 0, width - 1], [0, 1, 0], [0, 0, 1]])


def motion_noise(generator: torch.Generator, *images: torch.Tensor) -> list[torch.Tensor]:
    """Film grain of a random size (1..4 pixels), colour or monochrome, on each (T, C, H, W) image (any device; the
    grain is drawn on the CPU from `generator`)."""
    grain = uniform(generator, 1, 4)
    monochrome = uniform(generator) < 0.5
    noisy = []
    for image in images:
        steps, channels, height, width = image.shape
        shape = (steps, 1 if monochrome else channels, max(1, round(height / grain)), max(1, round(width / grain)))
        noise = (torch.randn(shape, generator=generator) * uniform(generator, 0, 0.2) / grain).to(image.device)
        noise = F.interpolate(noise, size=(height, width), mode='bilinear', align_corners=False)
        noisy.append((image + noise).clamp(0, 1))
    return noisy


def motion_color_jitter(generator: torch.Generator, image: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast, saturation and hue of (T, 3, H, W) drifting over the sequence
    (torchvision's definitions, with kornia's per-frame factors)."""
    start, end = torch.randn(2, 4, generator=generator) * 0.1
    progress = random_progress(generator, len(image))[:, None] * uniform(generator, 0, 0.2)
    brightness, contrast, saturation, hue = (start + (end - start) * progress).T.to(image.device)
    image = (image * (1 + brightness).clamp(min=0.1)[:, None, None, None]).clamp_(0, 1)
    image = adjust_contrast_with_mean_subtraction(image, (1 + contrast).clamp(min=0.1))
    image = adjust_saturation_with_gray_subtraction(image, (1 + saturation).clamp(min=0.1))
    return rotate_hue(image, (hue * 0.1).clamp(-0.5, 0.5))


def rotate_hue(image: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """image (T, 3, H, W) RGB float in 0..1 with each frame's hue rotated by turns (T,), fractions of the hue circle.

    kornia.enhance.adjust_hue's HSV rotation; on the CPU through OpenCV's colour conversions (the same values to
    ~1e-6), which are an order of magnitude faster there than kornia's tensor arithmetic.
    """
    if image.device.type != 'cpu':
        return adjust_hue(image, turns.to(image.device) * 2 * math.pi)
    frames = image.permute(0, 2, 3, 1).contiguous().numpy()
    rotated = np.empty_like(frames)
    for t, turn in enumerate(turns.tolist()):
        hsv = cv2.cvtColor(frames[t], cv2.COLOR_RGB2HSV)  # float input: hue in degrees 0..360
        hsv[..., 0] = (hsv[..., 0] + turn * 360) % 360
        rotated[t] = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    return torch.from_numpy(rotated).permute(0, 3, 1, 2)


def motion_blur(generator: torch.Generator, *images: torch.Tensor) -> list[torch.Tensor]:
    """Gaussian blur whose sigma (0..10 pixels) drifts over the sequence, the same on every image."""
    start, end = uniform(generator, 0, 10), uniform(generator, 0, 10)
    sigmas = start + (end - start) * random_progress(generator, len(images[0]))
    blurred = [image.clone() for image in images]
    for t, sigma in enumerate(sigmas.tolist()):
        if sigma > 0:
            kernel = int(2 * sigma) // 2 * 2 + 1  # about two sigmas wide, odd, as RobustVideoMatting
            for image in blurred:
                image[t] = TF.gaussian_blur(image[t], [kernel, kernel], [sigma, sigma])
    return blurred


def motion_pause(generator: torch.Generator, *images: torch.Tensor) -> list[torch.Tensor]:
    """Hold one random frame for a random number of following frames, the same on every image."""
    steps = len(images[0])
    frame = randint(generator, steps - 1)
    length = randint(generator, steps - frame)
    paused = [image.clone() for image in images]
    for image in paused:
        image[frame + 1:frame + length] = image[frame]
    return paused


class TrainFrameSampler:
    """Frames of a clip at a random playback speed: every s-th frame, s uniform in 1..max_speed.

    The original trained on every 10th frame of 30 fps footage; a random speed also teaches slow motion.
    The speed is limited so that the window fits in the clip, and the window starts anywhere in the clip
    (the item's `start` only weights clips by length). A clip shorter than seq_length plays forward then
    backward (ping-pong) until the sequence is full, so no clip is skipped and motion stays continuous.
    """

    def __init__(self, max_speed: int = 10):
        self.max_speed = max_speed

    def __call__(self, n_frames: int, start: int, seq_length: int, generator: torch.Generator) -> list[int]:
        if n_frames < seq_length:
            period = max(1, 2 * (n_frames - 1))
            return [n_frames - 1 - abs(n_frames - 1 - t % period) for t in range(seq_length)]
        fastest = self.max_speed if seq_length == 1 else min(self.max_speed, (n_frames - 1) // (seq_length - 1))
        speed = 1 + randint(generator, fastest)
        first = randint(generator, n_frames - speed * (seq_length - 1))
        return [first + speed * t for t in range(seq_length)]


class ValidFrameSampler:
    """Frames start..start+seq_length-1 in order, cut short at the clip's end."""

    def __call__(self, n_frames: int, start: int, seq_length: int, generator: torch.Generator) -> list[int]:
        return list(range(start, min(start + seq_length, n_frames)))
