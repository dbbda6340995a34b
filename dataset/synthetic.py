"""The built-in synthetic dataset: human-like figures moving over textured backgrounds, with exact alpha.

    python -m dataset.synthetic --root data/synthetic --style plain --seed 0

writes, in the layouts of SPEC section 4 and with no download:
    <root>/{train,valid}/{fgr,pha}/<clip>/<frame>.jpg    the frames of each clip
    <root>/backgrounds/{train,valid}/<image>.jpg         background images
    <root>/videos/{train,test}/{fgr,pha}/<clip>.mp4      with --videos: the clips as VideoMatte240K is
                                                         distributed (its held-out split is named test)
A figure has a head, a neck, a torso that leaves the frame at the bottom and two arms swinging at the
shoulder and elbow, soft alpha edges and thin semi-transparent strands of hair. It sways across the
frame, so that different parts of the background show over time. Styles:
  plain       skin, hair and a striped shirt of random colours, over textured backgrounds;
  camouflage  the figure is cut out of a texture of the same family (palette and statistics) as every
              background, so a single frame is ambiguous and only motion separates figure and background.
The dataset is determined by the seed and the options. It is written to a temporary folder and renamed
into place when complete, so an interrupted run leaves no partial dataset.
"""
import argparse
import math
import os
import shutil
import tempfile

import cv2
import numpy as np

STYLES = ('plain', 'camouflage')
VIDEO_SPLITS = {'train': 'train', 'valid': 'test'}
SUBPIXEL = 4  # OpenCV drawing keeps 4 fractional bits, so that slow motion is smooth, not in 1-pixel steps

parser = argparse.ArgumentParser(prog='python -m dataset.synthetic', description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument('--root', required=True, help='folder to create (it must not exist, or be empty)')
parser.add_argument('--style', default='plain', choices=STYLES, help='figure style (see above)')
parser.add_argument('--seed', type=int, default=0, help='random seed: the same seed and options give the same files')
parser.add_argument('--width', type=int, default=320, help='frame and background width in pixels')
parser.add_argument('--height', type=int, default=180, help='frame and background height in pixels')
parser.add_argument('--frames', type=int, default=40, help='frames per clip')
parser.add_argument('--train-clips', type=int, default=6, help='clips in the train split')
parser.add_argument('--valid-clips', type=int, default=2, help='clips in the valid split')
parser.add_argument('--train-backgrounds', type=int, default=8, help='background images for training')
parser.add_argument('--valid-backgrounds', type=int, default=4, help='background images for validation')
parser.add_argument('--quality', type=int, default=95, help='JPEG quality of frames and backgrounds (1-100)')
parser.add_argument('--videos', action='store_true', help='also write each clip as mp4 videos (see above)')


def main() -> None:
    args = parser.parse_args()
    try:
        generate(args.root, style=args.style, seed=args.seed, width=args.width, height=args.height,
                 frames=args.frames, train_clips=args.train_clips, valid_clips=args.valid_clips,
                 train_backgrounds=args.train_backgrounds, valid_backgrounds=args.valid_backgrounds,
                 quality=args.quality, videos=args.videos)
    except (OSError, ValueError) as error:
        raise SystemExit(f'error: {error}')
    print(f'wrote the {args.style} synthetic dataset to {args.root}')


def generate(root: str, style: str = 'plain', seed: int = 0, width: int = 320, height: int = 180, frames: int = 40,
             train_clips: int = 6, valid_clips: int = 2, train_backgrounds: int = 8, valid_backgrounds: int = 4,
             quality: int = 95, videos: bool = False) -> None:
    """Write the synthetic dataset to `root` (see the module docstring); ValueError for bad options,
    FileExistsError if root exists and is not empty. If another process completes the same root first,
    its dataset is kept."""
    if style not in STYLES:
        raise ValueError(f'unknown style {style!r}; use one of {", ".join(STYLES)}')
    if min(width, height) < 16 or min(frames, train_clips, valid_clips, train_backgrounds, valid_backgrounds) < 1:
        raise ValueError('width and height must be at least 16, and frames, clips and backgrounds at least 1')
    if not 1 <= quality <= 100 or seed < 0:
        raise ValueError(f'quality {quality}, seed {seed}: use a JPEG quality within 1..100 and a seed of 0 or more')
    if os.path.exists(root) and not (os.path.isdir(root) and not os.listdir(root)):
        raise FileExistsError(f'{root}: already exists; delete it or choose another root')
    parent = os.path.dirname(os.path.abspath(root))
    os.makedirs(parent, exist_ok=True)
    temp = tempfile.mkdtemp(prefix=f'.{os.path.basename(root)}.', dir=parent)
    try:
        palette = random_palette(np.random.default_rng([seed, 0]))  # the camouflage family's colours
        for split_id, (split, clips, backgrounds) in enumerate(
                [('train', train_clips, train_backgrounds), ('valid', valid_clips, valid_backgrounds)]):
            for i in range(backgrounds):
                rng = np.random.default_rng([seed, 1, split_id, i])
                image = texture(rng, height, width, height, palette if style == 'camouflage' else random_palette(rng))
                write_image(os.path.join(temp, 'backgrounds', split, f'{i:04d}.jpg'), image, quality)
            for i in range(clips):
                rng = np.random.default_rng([seed, 2, split_id, i])
                figure = Figure(rng, style, width, height, frames, palette)
                clip = [figure.render(t) for t in range(frames)]
                for part, images in (('fgr', [fgr for fgr, _ in clip]), ('pha', [pha for _, pha in clip])):
                    for t, image in enumerate(images):
                        write_image(os.path.join(temp, split, part, f'{i:04d}', f'{t:05d}.jpg'), image, quality)
                    if videos:
                        write_video(os.path.join(temp, 'videos', VIDEO_SPLITS[split], part, f'{i:04d}.mp4'), images)
        try:
            os.replace(temp, root)
        except OSError:
            if not (os.path.isdir(root) and os.listdir(root)):
                raise
            shutil.rmtree(temp)  # another process wrote the same dataset meanwhile
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise


class Figure:
    """One clip's figure: its shape, colours and motion, drawn from rng; render(t) draws frame t."""

    def __init__(self, rng: np.random.Generator, style: str, width: int, height: int, frames: int,
                 palette: np.ndarray):
        self.width, self.height, self.frames = width, height, frames
        self.size = height * rng.uniform(0.75, 0.95)  # the unit of the figure's proportions
        self.x = width * rng.uniform(0.35, 0.65)
        self.sway = width * rng.uniform(0.12, 0.3), rng.uniform(30, 80), rng.uniform(0, 2 * math.pi)
        self.drift = width * rng.uniform(-0.15, 0.15)
        self.bob = height * rng.uniform(0.005, 0.025), rng.uniform(15, 30), rng.uniform(0, 2 * math.pi)
        self.lean = rng.uniform(2, 8), rng.uniform(25, 60), rng.uniform(0, 2 * math.pi)
        # Per arm: shoulder angle from hanging down (degrees), its swing, period, phase; elbow bend, its swing.
        self.arms = [(rng.uniform(8, 30), rng.uniform(10, 70), rng.uniform(18, 50), rng.uniform(0, 2 * math.pi),
                      rng.uniform(10, 50), rng.uniform(0, 80)) for _ in range(2)]
        # Per hair strand: angle on the head's upper outline, length, curl, opacity (0..255).
        strands = rng.integers(30, 80)
        self.hair = np.stack([rng.uniform(-170, -10, strands), rng.uniform(0.08, 0.35, strands) * self.size,
                              rng.uniform(-0.5, 0.5, strands), rng.uniform(80, 210, strands)], 1)
        self.camouflage = style == 'camouflage'
        if self.camouflage:
            self.texture = texture(rng, height * 2, width * 3, height, palette)
        else:
            self.skin = rng.uniform([120, 70, 40], [255, 210, 180]).astype(np.float32)
            self.hair_colour = (rng.uniform(10, 120, 3) * rng.uniform(0.3, 1)).astype(np.float32)
            shirt, stripe = random_palette(rng)[:2]
            period, angle = rng.uniform(0.04, 0.15) * self.size, rng.uniform(0, math.pi)
            x = np.arange(width * 3, dtype=np.float32) * math.cos(angle)
            y = np.arange(height * 2, dtype=np.float32)[:, None] * math.sin(angle)
            stripes = (np.sin((x + y) * 2 * math.pi / period) > 0)[..., None]
            self.texture = np.where(stripes, shirt, stripe).astype(np.uint8)

    def render(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Frame t: foreground (H, W, 3) and alpha (H, W), uint8."""
        s = self.size
        cx = self.x + wave(self.sway, t) + self.drift * (t / max(1, self.frames - 1) - 0.5)
        head = np.array([cx + s * 0.3 * math.sin(math.radians(wave(self.lean, t))),
                         self.height - s * 0.82 + wave(self.bob, t)])
        head_axes = np.array([0.1, 0.13]) * s
        shoulders = np.array([cx, head[1] + 0.25 * s])

        skin, clothes, hair = (np.zeros((self.height, self.width), np.uint8) for _ in range(3))
        ellipse(skin, head, head_axes, wave(self.lean, t), 0, 360)
        line(skin, head + [0, 0.08 * s], shoulders, 0.1 * s)
        ellipse(clothes, shoulders + [0, 0.06 * s], np.array([0.24, 0.1]) * s, 0, 180, 360)
        polygon(clothes, [shoulders + [-0.24 * s, 0.06 * s], shoulders + [0.24 * s, 0.06 * s],
                          [cx + 0.3 * s, self.height + 2], [cx - 0.3 * s, self.height + 2]])
        for side, (angle, swing, period, phase, bend, bend_swing) in zip((-1, 1), self.arms):
            shoulder = shoulders + [side * 0.2 * s, 0.05 * s]
            swing_now = 0.5 + 0.5 * math.sin(2 * math.pi * t / period + phase)
            bend_now = 0.5 + 0.5 * math.sin(2 * math.pi * t / period + phase + 1)  # the elbow lags the shoulder
            upper = math.radians(angle + swing * swing_now)
            elbow = shoulder + 0.3 * s * np.array([side * math.sin(upper), math.cos(upper)])
            fore = upper + math.radians(bend + bend_swing * bend_now)
            hand = elbow + 0.27 * s * np.array([side * math.sin(fore), math.cos(fore)])
            line(clothes, shoulder, elbow, 0.09 * s)
            line(skin, elbow, hand, 0.075 * s)
            ellipse(skin, hand, np.array([0.045, 0.045]) * s, 0, 0, 360)
        ellipse(hair, head - [0, 0.01 * s], head_axes * 1.06, wave(self.lean, t), 180, 360)
        self._draw_strands(hair, head, head_axes, t)

        layers = [cv2.GaussianBlur(mask, (0, 0), 0.6).astype(np.float32)[..., None] / 255
                  for mask in (clothes, skin, hair)]
        alpha = 1 - (1 - layers[0]) * (1 - layers[1]) * (1 - layers[2])
        # The texture moves with the figure: a window of the larger texture, shifted by subpixel amounts.
        shift = np.float32([[1, 0, cx - self.width * 1.5], [0, 1, wave(self.bob, t) - self.height * 0.5]])
        fgr = cv2.warpAffine(self.texture, shift, (self.width, self.height), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT)
        if not self.camouflage:
            fgr = fgr * (1 - layers[1]) + self.skin * layers[1]
            fgr = fgr * (1 - layers[2]) + self.hair_colour * layers[2]
        return np.clip(fgr, 0, 255).astype(np.uint8), np.round(alpha[..., 0] * 255).astype(np.uint8)

    def _draw_strands(self, mask: np.ndarray, head: np.ndarray, axes: np.ndarray, t: int) -> None:
        """Thin strands from the top of the head, trailing behind the head's horizontal motion."""
        drag = -3 * (wave(self.sway, t + 1) - wave(self.sway, t)) / self.size
        angle, length, curl, opacity = self.hair.T
        direction = np.stack([np.cos(np.radians(angle)), np.sin(np.radians(angle))], 1)
        root = head + axes * direction
        outward = np.copysign(0.4 + 0.6 * abs(direction[:, 0]), direction[:, 0])
        tip = root + length[:, None] * np.stack([outward + drag, 0.2 + 0.7 * abs(direction[:, 0])], 1)
        bend = (root + tip) / 2 + length[:, None] * np.stack([curl + drag / 2, np.full_like(curl, -0.3)], 1)
        u = np.linspace(0, 1, 8)[None, :, None]
        curves = (1 - u) ** 2 * root[:, None] + 2 * u * (1 - u) * bend[:, None] + u ** 2 * tip[:, None]
        for curve, value in zip(np.round(curves * 2 ** SUBPIXEL).astype(np.int32), opacity):
            cv2.polylines(mask, [curve], False, int(value), 1, cv2.LINE_AA, SUBPIXEL)


def wave(params: tuple[float, float, float], t: float) -> float:
    amplitude, period, phase = params
    return amplitude * math.sin(2 * math.pi * t / period + phase)


# Anti-aliased filled shapes on uint8 images, in pixel coordinates with subpixel precision.
def ellipse(image: np.ndarray, centre: np.ndarray, axes: np.ndarray, angle: float, start: float, end: float,
            colour=255) -> None:
    cv2.ellipse(image, fixed(centre), fixed(axes), angle, start, end, colour, -1, cv2.LINE_AA, SUBPIXEL)


def line(image: np.ndarray, start: np.ndarray, end: np.ndarray, thickness: float, colour=255) -> None:
    cv2.line(image, fixed(start), fixed(end), colour, max(1, round(thickness)), cv2.LINE_AA, SUBPIXEL)


def polygon(image: np.ndarray, points: list, colour=255) -> None:
    cv2.fillPoly(image, [np.array([fixed(p) for p in points], np.int32)], colour, cv2.LINE_AA, SUBPIXEL)


def fixed(point) -> tuple[int, int]:
    """A point in OpenCV's fixed-point pixel coordinates."""
    return round(point[0] * 2 ** SUBPIXEL), round(point[1] * 2 ** SUBPIXEL)


def random_palette(rng: np.random.Generator) -> np.ndarray:
    """(4, 3) RGB colours in 0..255."""
    return rng.uniform(0, 255, (4, 3)).astype(np.float32)


def texture(rng: np.random.Generator, height: int, width: int, unit: float, palette: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB: fractal noise through the palette, and random shapes of its colours.

    Sizes are relative to `unit` pixels (the frame height), so textures of any size share statistics.
    """
    noise = np.zeros((height, width), np.float32)
    for octave in range(5):
        cells = 2 ** (octave + 1) / unit
        layer = rng.random((math.ceil(cells * height) + 1, math.ceil(cells * width) + 1), np.float32)
        noise += cv2.resize(layer, (width, height), interpolation=cv2.INTER_CUBIC) * 0.55 ** octave
    noise = (noise - noise.min()) / (noise.max() - noise.min() + 1e-6) * (len(palette) - 1)
    low = np.floor(noise).astype(int).clip(0, len(palette) - 2)
    image = palette[low] + (palette[low + 1] - palette[low]) * (noise - low)[..., None]
    image = np.clip(image * rng.uniform(0.9, 1.1, 3), 0, 255).astype(np.uint8)
    for _ in range(round(rng.integers(4, 12) * height * width / unit ** 2 / 16 * 9)):
        centre = rng.uniform([0, 0], [width, height])
        radius = rng.uniform(0.05, 0.3) * unit
        colour = (palette[rng.integers(len(palette))] * rng.uniform(0.8, 1.1)).clip(0, 255).tolist()
        kind = rng.integers(3)
        if kind == 0:
            axes = np.array([radius, radius * rng.uniform(0.3, 1)])
            ellipse(image, centre, axes, rng.uniform(0, 180), 0, 360, colour)
        elif kind == 1:
            corner = centre + rng.uniform(-1, 1, 2) * radius * 2
            polygon(image, [centre, [corner[0], centre[1]], corner, [centre[0], corner[1]]], colour)
        else:
            line(image, centre, centre + rng.uniform(-1, 1, 2) * radius * 4, radius * 0.15, colour)
    return image


def write_image(path: str, rgb: np.ndarray, quality: int) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = np.clip(rgb, 0, 255).astype(np.uint8)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(path, image, [cv2.IMWRITE_JPEG_QUALITY, quality]):
        raise OSError(f'{path}: OpenCV could not write this file')


def write_video(path: str, images: list[np.ndarray]) -> None:
    """An mp4 (MPEG-4 part 2, the encoder every OpenCV build has) at 30 frames/s."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    height, width = images[0].shape[:2]
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*'mp4v'), 30, (width, height))
    if not writer.isOpened():
        raise OSError(f'{path}: this OpenCV build cannot write mp4 videos; install opencv-python-headless')
    for image in images:
        writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR if image.ndim == 3 else cv2.COLOR_GRAY2BGR))
    writer.release()


if __name__ == '__main__':
    main()
