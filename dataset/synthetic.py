"""The built-in synthetic data: human-like figures moving over textured backgrounds, with exact alpha.

Two uses:
  SyntheticDataset    what train.py and validate.py read for --dataset-name synthetic / synthetic-camouflage:
                      clips drawn in memory, at the requested size, never stored. The train split draws a new
                      clip for every (seed, epoch, item), so no clip repeats within any budget; the valid and test
                      splits are fixed sets (32 clips of 40 frames by default) from generator seeds that training
                      never uses, the same for every training seed.
  python -m dataset.synthetic --root data/synthetic --style plain --seed 0
                      writes a dataset to disk, in the layouts of README's Data section, for users who want files:
    <root>/{train,valid}/{fgr,pha}/<clip>/<frame>.jpg    the frames of each clip
    <root>/backgrounds/{train,valid}/<image>.jpg         background images
    <root>/videos/{train,test}/{fgr,pha}/<clip>.mp4      with --videos: the clips as VideoMatte240K is
                                                         distributed (its held-out split is named test)
                      Train on it as on VideoMatte240K: --dataset-name videomatte240k --videomatte-root <root>
                      --backgrounds-root <root>/backgrounds.
A figure has a head, a neck, a torso that leaves the frame at the bottom and two arms swinging at the
shoulder and elbow, soft alpha edges and thin semi-transparent strands of hair. It sways across the
frame, so that different parts of the background show over time; in memory the camera also pans sideways at times.
Styles:
  plain       skin, hair and a striped shirt of random colours, over textured backgrounds;
  camouflage  the figure is cut out of a texture of the same family (palette and statistics) as its background,
              and the background holds a still decoy: a figure-shaped cut-out of the same family (in memory: of
              the very same texture, in front of the figure or behind it at random). A single frame shows two
              figures alike, and only motion (or a memory of the background) tells which one is the person.
              In memory a strength below 1 blends the figures' plain appearance back in, the decoy's included.
The data is determined by the seed and the options. On disk it is written to a temporary folder and renamed
into place when complete, so an interrupted run leaves no partial dataset.
"""
import argparse
import math
import os
import shutil
import tempfile

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from data_path import SYNTHETIC_STYLES

STYLES = tuple(SYNTHETIC_STYLES.values())
SPLITS = ('train', 'valid', 'test')
VIDEO_SPLITS = {'train': 'train', 'valid': 'test'}
SUBPIXEL = 4  # OpenCV drawing keeps 4 fractional bits, so that slow motion is smooth, not in 1-pixel steps
TRAIN_CLIPS_PER_EPOCH = 100_000  # the train split's length: items of an epoch, each a clip of its own
EVAL_CLIPS, EVAL_FRAMES = 32, 40  # the valid and test splits: clips, frames per clip
DEFAULT_SIZE = 128  # frame size in pixels (square) when no size is asked for
DECOYS = 1  # still figure-shaped cut-outs in a camouflage clip
CAMERA_PAN_PROBABILITY = 0.3
# A panning camera's travel over a clip, in frame widths, uniform within this range, either way. The decoy, fixed to
# the background, sweeps it at constant speed, centred where a figure stands; a sway spends more of its time near
# its ends, so this is 1.15 times the range of figures' sway amplitudes (0.12..0.3 frame widths each way): then the
# decoy's centre spreads over the frames as figures' centres do (standard deviation 0.155 frame widths about their
# mean place, measured over 40-frame clips), and it leaves the frame no more than figures do.
CAMERA_TRAVEL = 0.28, 0.68

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


class SyntheticDataset(Dataset):
    """Synthetic clips drawn in memory, in the item format of VideoMatte240KDataset.

    Item i is (fgr, pha, bgr): float32 tensors (T, 3, S, S), (T, 1, S, S), (T, 3, S, S) in 0..1, S = size,
    T = seq_length frames of one clip in time order, with its own moving background.
    train: `clips` items (default TRAIN_CLIPS_PER_EPOCH), each a window of seq_length frames, at a random start, of a
        new clip of max(frames, seq_length) frames, drawn from a generator seeded by (seed, epoch, i): figure,
        proportions, clothing, motion, playback speed, background, camera motion and the window's start. Clips as
        long as the test clips make the camera and the figures move as fast per frame in training as in testing.
        Call set_epoch before each epoch.
    valid, test: `clips` fixed clips of `frames` frames (defaults EVAL_CLIPS, EVAL_FRAMES), clip c drawn from a
        generator seeded by (split, c) whatever the seed; the items are their seq_length-frame tiles in order,
        index[i] = (clip_idx, start), clip names in `clips`, frame names in `frames[clip_idx]`, as
        VideoMatte240KDataset's valid split; camera_pans(clip_idx) tells the clips whose camera moves.
    camouflage: the range each camouflage clip's strength is drawn from uniformly (the weight of the texture over
        the figures' plain appearance, see Clip); (1, 1), the default, camouflages every clip fully.
    """

    def __init__(self, style: str, split: str, seq_length: int, size: int = DEFAULT_SIZE, seed: int = 0,
                 clips: int | None = None, frames: int = EVAL_FRAMES,
                 camouflage: tuple[float, float] = (1.0, 1.0)):
        if style not in STYLES or split not in SPLITS:
            raise ValueError(f'style {style!r}, split {split!r}: use a style of {STYLES} and a split of {SPLITS}')
        if min(seq_length, size - 15, frames) < 1 or seed < 0 or (clips is not None and clips < 1):
            raise ValueError(f'seq_length {seq_length}, size {size}, frames {frames}, clips {clips}, seed {seed}: '
                             f'use 1 or more frames and clips, a size of 16 pixels or more and a seed of 0 or more')
        self.style, self.split, self.seq_length, self.size, self.seed = style, split, seq_length, size, seed
        self.camouflage = camouflage
        self.epoch = 0
        if split == 'train':
            self.length = clips or TRAIN_CLIPS_PER_EPOCH
            self.clip_length = max(frames, seq_length)
            return
        self.pans: dict[int, bool] = {}  # camera_pans's answers
        count = clips or EVAL_CLIPS
        self.clips = [f'{c:04d}' for c in range(count)]
        self.frames = [[f'{t:05d}' for t in range(frames)] for _ in range(count)]
        self.index = [(c, start) for c in range(count) for start in range(0, frames, seq_length)]
        self.length = len(self.index)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        clip, times = self.clip(index)
        fgr, pha, bgr = (np.stack(part) for part in zip(*(clip.render(t) for t in times)))
        return (torch.from_numpy(fgr).permute(0, 3, 1, 2), torch.from_numpy(pha)[:, None],
                torch.from_numpy(bgr).permute(0, 3, 1, 2))

    def clip(self, index: int) -> tuple['Clip', range]:
        """Item `index`'s clip and the frames of it that the item shows (only those are rendered)."""
        if self.split == 'train':
            rng = np.random.default_rng([SPLITS.index('train'), self.seed, self.epoch, index])
            clip = Clip(rng, self.style, self.size, self.clip_length, self.strength(rng))
            start = int(rng.integers(self.clip_length - self.seq_length + 1))
            return clip, range(start, start + self.seq_length)
        clip_idx, start = self.index[index]
        return self.eval_clip(clip_idx), range(start, min(start + self.seq_length, len(self.frames[clip_idx])))

    def eval_clip(self, clip_idx: int) -> 'Clip':
        """Clip clip_idx of the valid or test split."""
        rng = np.random.default_rng([SPLITS.index(self.split), clip_idx])
        return Clip(rng, self.style, self.size, len(self.frames[clip_idx]), self.strength(rng))

    def camera_pans(self, clip_idx: int) -> bool:
        """Whether the camera moves in clip clip_idx of the valid or test split."""
        if clip_idx not in self.pans:
            self.pans[clip_idx] = self.eval_clip(clip_idx).pans
        return self.pans[clip_idx]

    def strength(self, rng: np.random.Generator) -> float:
        """A clip's camouflage strength, uniform in the camouflage range (drawn in every style, so that the plain and
        camouflage clips of an index share their other draws' order)."""
        low, high = self.camouflage
        return low + (high - low) * rng.random()


class Clip:
    """One clip in memory: a figure over a background that the camera may pan across; render(t) draws frame t.

    The background is a window of a texture (2S x 3S), which moves sideways at a constant velocity in
    CAMERA_PAN_PROBABILITY of the clips (`pans`; the camera's height never changes) and rests at a random subpixel
    position otherwise. In camouflage the figure and a still decoy (a figure frozen at one instant, fixed to the
    background) are cut from that same texture at other places, and both are drawn the same way at every frame, so
    that nothing in a single frame (texture statistics, colour cast, edge sharpness, size, position, how much of it
    the frame shows) tells the figure from the decoy: a still camera shows the decoy where its figure stood at that
    instant; a panning one sweeps it across CAMERA_TRAVEL, centred where its figure stands, as a figure sways. The
    decoy stands in front of the figure or behind it, at random, so that occlusion tells nothing either: in front, it
    is drawn into the background and cut out of the figure's alpha, as an object passing in front of a person. With
    one decoy, a guess on a single frame is a coin between two equally likely silhouettes
    (tests/test_synthetic_cues.py).
    strength: in the camouflage style, the weight of the texture over the plain appearance of the figure and of the
    decoys alike (1: none of it is left; 0: plain figures, of which only the moving one is the matte's).
    The clip plays at a random speed: frame t shows the figure's motion at time speed * t.
    """

    def __init__(self, rng: np.random.Generator, style: str, size: int, frames: int, strength: float = 1.0):
        self.size, self.frames = size, frames
        camouflage = style == 'camouflage'
        self.speed = rng.uniform(0.5, 2.5)
        span = self.speed * max(1, frames - 1) + 1
        self.background = texture(rng, 2 * size, 3 * size, size, random_palette(rng))
        # The camera's sideways travel over the clip (pixels, signed); the window stays within the texture.
        self.travel = (rng.uniform(*CAMERA_TRAVEL) * size * rng.choice([-1, 1])
                       if rng.random() < CAMERA_PAN_PROBABILITY else 0.0)
        self.origin = rng.uniform([abs(self.travel) / 2, 0], [2 * size - abs(self.travel) / 2, size])
        # Each decoy: its figure, the instant it is frozen at, whether it stands in front of the figure, and how far
        # sideways it is moved from where its figure stood then (in a pan: back to its figure's place, before its
        # sway, so that the pan's sweep takes the sway's place).
        self.decoys = []
        for _ in range(DECOYS if camouflage else 0):
            decoy, still = Figure(rng, size, size, span, self.background, strength), rng.uniform(0, span)
            self.decoys.append((decoy, still, rng.random() < 0.5, -wave(decoy.sway, still) if self.pans else 0.0))
        self.figure = Figure(rng, size, size, span, self.background if camouflage else None, strength)

    @property
    def pans(self) -> bool:
        """Whether the camera moves in this clip."""
        return self.travel != 0

    def render(self, t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Frame t: foreground (S, S, 3), alpha (S, S) and background (S, S, 3), float32 in 0..1.

        The decoys are composited into the background in float, as the training loop composites the figure, and the
        figure's alpha where a decoy hides it stays float too: no rounding tells the two apart."""
        fgr, pha = self.figure.render(self.speed * t)
        window = np.float32([[1, 0, -self.origin[0] - self.camera_at(t)], [0, 1, -self.origin[1]]])
        bgr = cv2.warpAffine(self.background, window, (self.size, self.size), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT).astype(np.float32) / 255
        pha = pha.astype(np.float32) / 255
        for decoy_fgr, alpha, in_front in self.decoys_at(t):
            bgr = decoy_fgr * alpha[..., None] + bgr * (1 - alpha[..., None])
            if in_front:  # it hides the figure: drawn in the background, cut out of the figure's alpha
                pha = pha * (1 - alpha)
        return fgr.astype(np.float32) / 255, pha, bgr

    def decoys_at(self, t: int) -> list[tuple[np.ndarray, np.ndarray, bool]]:
        """Each decoy at frame t: foreground (S, S, 3) and alpha (S, S), float32 in 0..1, and whether it stands in
        front of the figure."""
        decoys = []
        for decoy, still, in_front, shift in self.decoys:
            decoy_fgr, decoy_pha = decoy.render(still, offset=np.array([shift - self.camera_at(t), 0]))
            decoys.append((decoy_fgr.astype(np.float32) / 255, decoy_pha.astype(np.float32) / 255, in_front))
        return decoys

    def camera_at(self, t: float) -> float:
        """The camera's sideways offset in pixels at frame t, from its place at the middle of the clip."""
        return self.travel * (t / max(1, self.frames - 1) - 0.5)


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
    camouflage = style == 'camouflage'
    try:
        palette = random_palette(np.random.default_rng([seed, 0]))  # the camouflage family's colours
        for split_id, (split, clips, backgrounds) in enumerate(
                [('train', train_clips, train_backgrounds), ('valid', valid_clips, valid_backgrounds)]):
            for i in range(backgrounds):
                rng = np.random.default_rng([seed, 1, split_id, i])
                image = texture(rng, height, width, height, palette if camouflage else random_palette(rng))
                if camouflage:
                    for _ in range(DECOYS):
                        decoy = Figure(rng, width, height, frames, texture(rng, 2 * height, 3 * width, height, palette))
                        fgr, pha = decoy.render(rng.uniform(0, frames))
                        alpha = pha[..., None].astype(np.float32) / 255
                        image = (fgr * alpha + image * (1 - alpha)).round().astype(np.uint8)
                write_image(os.path.join(temp, 'backgrounds', split, f'{i:04d}.jpg'), image, quality)
            for i in range(clips):
                rng = np.random.default_rng([seed, 2, split_id, i])
                figure = Figure(rng, width, height, frames,
                                texture(rng, 2 * height, 3 * width, height, palette) if camouflage else None)
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
    """One figure: its shape, clothing and motion, drawn from rng; render(t) draws it at time t (frames).

    Its plain appearance is skin, hair and a striped shirt of random colours. clothing: a (2H, 3W, 3) uint8
    texture the whole figure is cut from instead (camouflage), blended over the plain appearance with weight
    `camouflage` (1: only the texture). unit: the frame height its proportions are relative to (default `height`).
    """

    def __init__(self, rng: np.random.Generator, width: int, height: int, frames: float,
                 clothing: np.ndarray | None = None, camouflage: float = 1.0, unit: float | None = None):
        unit = unit or height
        self.width, self.height, self.frames = width, height, frames
        self.size = unit * rng.uniform(0.6, 0.95)  # the unit of the figure's proportions
        self.x = width * rng.uniform(0.25, 0.75)
        self.sway = unit * rng.uniform(0.12, 0.3), rng.uniform(30, 80), rng.uniform(0, 2 * math.pi)
        self.drift = unit * rng.uniform(-0.15, 0.15)
        self.bob = unit * rng.uniform(0.005, 0.025), rng.uniform(15, 30), rng.uniform(0, 2 * math.pi)
        self.lean = rng.uniform(2, 8), rng.uniform(25, 60), rng.uniform(0, 2 * math.pi)
        # Per arm: shoulder angle from hanging down (degrees), its swing, period, phase; elbow bend, its swing.
        self.arms = [(rng.uniform(8, 30), rng.uniform(10, 70), rng.uniform(18, 50), rng.uniform(0, 2 * math.pi),
                      rng.uniform(10, 50), rng.uniform(0, 80)) for _ in range(2)]
        # Per hair strand: angle on the head's upper outline, length, curl, opacity (0..255).
        strands = rng.integers(30, 80)
        self.hair = np.stack([rng.uniform(-170, -10, strands), rng.uniform(0.08, 0.35, strands) * self.size,
                              rng.uniform(-0.5, 0.5, strands), rng.uniform(80, 210, strands)], 1)
        self.skin = rng.uniform([120, 70, 40], [255, 210, 180]).astype(np.float32)
        self.hair_colour = (rng.uniform(10, 120, 3) * rng.uniform(0.3, 1)).astype(np.float32)
        shirt, stripe = random_palette(rng)[:2]
        period, angle = rng.uniform(0.04, 0.15) * self.size, rng.uniform(0, math.pi)
        x = np.arange(width * 3, dtype=np.float32) * math.cos(angle)
        y = np.arange(height * 2, dtype=np.float32)[:, None] * math.sin(angle)
        stripes = (np.sin((x + y) * 2 * math.pi / period) > 0)[..., None]
        self.shirt = np.where(stripes, shirt, stripe).astype(np.uint8)
        self.clothing = clothing
        self.camouflage = camouflage if clothing is not None else 0.0
        if clothing is not None:
            # Where the figure's clothes lie in the texture, so that figures cut from one texture differ.
            self.clothing_shift = rng.uniform([-width, -height / 2], [width, height / 2])

    def render(self, t: float, offset: np.ndarray = np.zeros(2)) -> tuple[np.ndarray, np.ndarray]:
        """The figure at time t, moved by offset (x, y) pixels: foreground (H, W, 3) and alpha (H, W), uint8."""
        s = self.size
        cx = self.centre(t) + offset[0]
        head = np.array([cx + s * 0.3 * math.sin(math.radians(wave(self.lean, t))),
                         self.height - s * 0.82 + offset[1] + wave(self.bob, t)])
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
        # The textures move with the figure: windows of larger textures, shifted by subpixel amounts.
        shift = np.array([cx - self.width * 1.5, offset[1] + wave(self.bob, t) - self.height * 0.5])
        fgr = 0.0
        if self.camouflage < 1:
            plain = self._window(self.shirt, shift)
            plain = plain * (1 - layers[1]) + self.skin * layers[1]
            fgr = (plain * (1 - layers[2]) + self.hair_colour * layers[2]) * (1 - self.camouflage)
        if self.camouflage > 0:
            fgr = fgr + self._window(self.clothing, shift + self.clothing_shift) * self.camouflage
        return np.clip(fgr, 0, 255).astype(np.uint8), np.round(alpha[..., 0] * 255).astype(np.uint8)

    def centre(self, t: float) -> float:
        """The x of the figure's neck and torso at time t, in pixels: where it stands, its sway and its drift."""
        return self.x + wave(self.sway, t) + self.drift * (t / max(1, self.frames - 1) - 0.5)

    def _window(self, texture: np.ndarray, shift: np.ndarray) -> np.ndarray:
        """The frame-sized window of `texture` whose origin is at -shift, bilinear, as float32."""
        matrix = np.float32([[1, 0, shift[0]], [0, 1, shift[1]]])
        return cv2.warpAffine(texture, matrix, (self.width, self.height), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REFLECT).astype(np.float32)

    def _draw_strands(self, mask: np.ndarray, head: np.ndarray, axes: np.ndarray, t: float) -> None:
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
