"""The built-in synthetic dataset: layout, determinism, the figures, camouflage, atomic writing, the command line."""
import hashlib
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from dataset import synthetic
from dataset.synthetic import generate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(width=64, height=36, frames=6, train_clips=2, valid_clips=1, train_backgrounds=2, valid_backgrounds=1)


def digests(root: str) -> dict[str, str]:
    """sha256 of every file under root, by relative path."""
    found = {}
    for folder, _, names in os.walk(root):
        for name in names:
            with open(os.path.join(folder, name), 'rb') as file:
                found[os.path.relpath(os.path.join(folder, name), root)] = hashlib.sha256(file.read()).hexdigest()
    return found


def read_clip(root: str, split: str, part: str, clip: str) -> np.ndarray:
    """(T, H, W, C) uint8 frames of a clip (C = 1 for pha)."""
    folder = os.path.join(root, split, part, clip)
    flag = cv2.IMREAD_GRAYSCALE if part == 'pha' else cv2.IMREAD_COLOR
    frames = [cv2.imread(os.path.join(folder, name), flag) for name in sorted(os.listdir(folder))]
    return np.stack(frames)[..., None] if part == 'pha' else np.stack(frames)


def test_layout(tiny_synthetic):
    assert sorted(os.listdir(tiny_synthetic)) == ['backgrounds', 'train', 'valid']
    for split, clips in (('train', ['0000', '0001', '0002']), ('valid', ['0000', '0001'])):
        assert sorted(os.listdir(os.path.join(tiny_synthetic, 'backgrounds', split))) == ['0000.jpg', '0001.jpg']
        for part in ('fgr', 'pha'):
            assert sorted(os.listdir(os.path.join(tiny_synthetic, split, part))) == clips
            frames = sorted(os.listdir(os.path.join(tiny_synthetic, split, part, clips[0])))
            assert frames == [f'{t:05d}.jpg' for t in range(12)]
    assert read_clip(tiny_synthetic, 'train', 'fgr', '0000').shape == (12, 54, 96, 3)


@pytest.mark.parametrize('style', ['plain', 'camouflage'])
def test_deterministic_for_a_seed(tmp_path, style):
    for name, seed in (('a', 0), ('b', 0), ('c', 1)):
        generate(str(tmp_path / name), style, seed, **TINY)
    assert digests(tmp_path / 'a') == digests(tmp_path / 'b')
    different = digests(tmp_path / 'c')
    assert different.keys() == digests(tmp_path / 'a').keys() and different != digests(tmp_path / 'a')


def test_figures_move_have_soft_edges_and_thin_strands(tiny_synthetic):
    alpha = read_clip(tiny_synthetic, 'train', 'pha', '0000')[..., 0] / 255
    height, width = alpha.shape[1:]
    solid, partial = alpha > 0.95, (alpha > 0.1) & (alpha < 0.9)
    assert partial.any() and solid.any() and not solid[:, :5].all()
    # Hair: semi-transparent pixels more than 2 pixels away from the solid figure (not just its soft edge).
    far = [cv2.distanceTransform((~s).astype(np.uint8), cv2.DIST_L2, 3) > 2 for s in solid]
    assert (partial & np.stack(far)).sum(axis=(1, 2)).min() >= 30
    # The torso leaves the frame at the bottom; over time the figure covers and uncovers the background.
    assert solid[:, -1].any(axis=1).all()
    revealed = solid.any(axis=0) & (alpha < 0.05).any(axis=0)
    assert revealed.sum() > 0.05 * height * width


def test_camouflage_figures_are_cut_from_the_backgrounds_texture_family(tmp_path):
    def colour_distance(style: str) -> float:
        """Mean distance from the figure's colours to the nearest colour of the backgrounds."""
        root = str(tmp_path / style)
        generate(root, style, 0, width=96, height=54, frames=2, train_clips=4, valid_clips=1, train_backgrounds=4,
                 valid_backgrounds=1)
        backgrounds = np.concatenate([cv2.imread(os.path.join(root, 'backgrounds', 'train', name)).reshape(-1, 3)
                                      for name in os.listdir(os.path.join(root, 'backgrounds', 'train'))])
        figure = []
        for clip in ('0000', '0001', '0002', '0003'):
            solid = read_clip(root, 'train', 'pha', clip)[0, ..., 0] > 250
            figure.append(read_clip(root, 'train', 'fgr', clip)[0][solid])
        figure = np.concatenate(figure)
        rng = np.random.default_rng(0)
        backgrounds = backgrounds[rng.choice(len(backgrounds), 1500)].astype(float)
        figure = figure[rng.choice(len(figure), 500)].astype(float)
        return np.linalg.norm(figure[:, None] - backgrounds[None], axis=2).min(axis=1).mean()

    assert colour_distance('camouflage') < 0.5 * colour_distance('plain')


def test_videos_as_distributed(tmp_path):
    generate(str(tmp_path / 'data'), videos=True, **TINY)
    for split, clips in (('train', 2), ('test', 1)):
        for part in ('fgr', 'pha'):
            names = sorted(os.listdir(tmp_path / 'data' / 'videos' / split / part))
            assert names == [f'{i:04d}.mp4' for i in range(clips)]
            capture = cv2.VideoCapture(str(tmp_path / 'data' / 'videos' / split / part / names[0]))
            assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == 6
            capture.release()


def test_an_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    written, write_image = [], synthetic.write_image

    def write_then_fail(path: str, image: np.ndarray, quality: int) -> None:
        written.append(path)
        if len(written) == 5:
            raise OSError('disk full')
        write_image(path, image, quality)

    monkeypatch.setattr(synthetic, 'write_image', write_then_fail)
    with pytest.raises(OSError, match='disk full'):
        generate(str(tmp_path / 'data'), **TINY)
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_bad_options_and_an_existing_root(tmp_path):
    with pytest.raises(ValueError, match="unknown style 'zebra'"):
        generate(str(tmp_path / 'a'), 'zebra')
    with pytest.raises(ValueError, match='at least 16'):
        generate(str(tmp_path / 'a'), width=8)
    os.makedirs(tmp_path / 'full')
    open(tmp_path / 'full' / 'file', 'w').close()
    with pytest.raises(FileExistsError, match=f'{tmp_path}/full: already exists'):
        generate(str(tmp_path / 'full'), **TINY)
    result = subprocess.run([sys.executable, '-m', 'dataset.synthetic', '--root', str(tmp_path / 'full')],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr == f'error: {tmp_path}/full: already exists; delete it or choose another root\n'


@pytest.mark.slow
def test_command_line_writes_the_dataset(tmp_path):
    result = subprocess.run([sys.executable, '-m', 'dataset.synthetic', '--root', str(tmp_path / 'data'),
                             '--style', 'camouflage', '--width', '32', '--height', '18', '--frames', '3',
                             '--train-clips', '1', '--valid-clips', '1', '--train-backgrounds', '1',
                             '--valid-backgrounds', '1'], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0 and result.stderr == ''
    assert len(os.listdir(tmp_path / 'data' / 'valid' / 'pha' / '0000')) == 3
