"""inference.py on generated videos and frame folders: outputs, streaming, the HD paths and bad input."""
import os

import cv2
import numpy as np
import pytest
import torch

from model import MattingBase
from script_runner import run_script

WIDTH, HEIGHT, FRAMES, FPS = 80, 48, 10, 12.0


@pytest.fixture(scope='module')
def video(tmp_path_factory) -> str:
    """A moving bright square over a gradient: FRAMES frames of WIDTH x HEIGHT at FPS."""
    path = str(tmp_path_factory.mktemp('video') / 'clip.mp4')
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*'mp4v'), FPS, (WIDTH, HEIGHT))
    for t in range(FRAMES):
        frame = np.tile(np.linspace(0, 200, WIDTH, dtype=np.uint8), (HEIGHT, 1))[..., None].repeat(3, 2)
        frame[10:30, 5 + 4 * t:25 + 4 * t] = (250, 220, 200)
        writer.write(frame)
    writer.release()
    return path


def read_video(path: str) -> tuple[list[np.ndarray], float]:
    capture = cv2.VideoCapture(path)
    fps = capture.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    return frames, fps


def infer(checkpoint: str, source: str, output: str, *extra: str):
    return run_script('inference.py', '--model-backbone', 'mobilenetv2', '--model-checkpoint', checkpoint,
                      '--input', source, '--output-dir', output, '--device', 'cpu', *extra)


def test_video_outputs_match_the_input(random_checkpoint, video, tmp_path):
    result = infer(random_checkpoint, video, str(tmp_path), '--output-types', 'pha', 'fgr', 'com', '--seq-length', '4')
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(tmp_path)) == ['com.mp4', 'fgr.mp4', 'pha.mp4']
    for name in ('com.mp4', 'fgr.mp4', 'pha.mp4'):
        frames, fps = read_video(str(tmp_path / name))
        assert len(frames) == FRAMES and fps == pytest.approx(FPS)
        assert frames[0].shape == (HEIGHT, WIDTH, 3)


def test_chunked_streaming_equals_one_pass(random_checkpoint, video, tmp_path):
    for seq_length in ('3', '10'):
        result = infer(random_checkpoint, video, str(tmp_path / seq_length), '--output-types', 'pha',
                       '--output-format', 'png', '--seq-length', seq_length)
        assert result.returncode == 0, result.stderr
    names = sorted(os.listdir(tmp_path / '3' / 'pha'))
    assert names == [f'{t:06d}.png' for t in range(FRAMES)]
    for name in names:
        chunked = cv2.imread(str(tmp_path / '3' / 'pha' / name)).astype(int)
        whole = cv2.imread(str(tmp_path / '10' / 'pha' / name)).astype(int)
        assert np.abs(chunked - whole).max() <= 1


def test_frame_folder_input_and_num_frames(random_checkpoint, video, tmp_path):
    folder = tmp_path / 'frames'
    folder.mkdir()
    for index, frame in enumerate(read_video(video)[0]):
        cv2.imwrite(str(folder / f'{index:04d}.png'), frame)
    result = infer(random_checkpoint, str(folder), str(tmp_path / 'out'), '--fps', '25', '--num-frames', '7')
    assert result.returncode == 0, result.stderr
    frames, fps = read_video(str(tmp_path / 'out' / 'com.mp4'))
    assert len(frames) == 7 and fps == pytest.approx(25)


@pytest.mark.parametrize('extra', [['--downsample-ratio', '0.5'],
                                   ['--model-refine', '--refine-backbone-scale', '0.5', '--refine-mode', 'full']])
def test_high_resolution_paths_keep_the_frame_size(random_checkpoint, video, tmp_path, extra):
    result = infer(random_checkpoint, video, str(tmp_path), '--output-types', 'pha', '--output-format', 'png', *extra)
    assert result.returncode == 0, result.stderr
    image = cv2.imread(str(tmp_path / 'pha' / '000000.png'))
    assert image.shape == (HEIGHT, WIDTH, 3) and len(os.listdir(tmp_path / 'pha')) == FRAMES


def test_composite_onto_a_colour_where_alpha_is_zero(random_checkpoint, video, tmp_path):
    torch.manual_seed(0)
    model = MattingBase('mobilenetv2')
    with torch.no_grad():
        model.decoder.conv4.bias[0] = -100.0  # alpha 0 everywhere
    path = tmp_path / 'transparent.pth'
    torch.save(model.state_dict(), path)
    result = infer(str(path), video, str(tmp_path / 'out'), '--output-format', 'png',
                   '--composite-background', '#ff0000')
    assert result.returncode == 0, result.stderr
    image = cv2.imread(str(tmp_path / 'out' / 'com' / '000003.png'))
    assert (image == (0, 0, 255)).all()  # OpenCV's BGR order


def assert_fails_cleanly(result, message: str, output) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith('error:') and message in lines[-1] and 'Traceback' not in result.stderr
    assert not os.path.exists(output) or os.listdir(output) == []


def test_bad_input(random_checkpoint, video, tmp_path):
    out = tmp_path / 'out'
    assert_fails_cleanly(infer(str(tmp_path / 'missing.pth'), video, str(out)), 'missing.pth does not exist', out)
    other = tmp_path / 'resnet50.pth'
    torch.save(MattingBase('resnet50').state_dict(), other)
    result = infer(str(other), video, str(out))
    assert_fails_cleanly(result, 'resnet50', out)
    assert 'mobilenetv2' in result.stderr
    broken = tmp_path / 'broken.mp4'
    broken.write_bytes(b'not a video at all' * 10)
    assert_fails_cleanly(infer(random_checkpoint, str(broken), str(out)), 'cannot be read as a video', out)
    empty = tmp_path / 'empty'
    empty.mkdir()
    assert_fails_cleanly(infer(random_checkpoint, str(empty), str(out)), 'holds no', out)
    taken = tmp_path / 'taken'
    taken.write_text('')
    assert_fails_cleanly(infer(random_checkpoint, video, str(taken)), 'is a file', out)


def test_a_corrupt_frame_leaves_no_partial_output(random_checkpoint, video, tmp_path):
    folder = tmp_path / 'frames'
    folder.mkdir()
    for index, frame in enumerate(read_video(video)[0]):
        cv2.imwrite(str(folder / f'{index:04d}.png'), frame)
    (folder / '0005.png').write_bytes(b'garbage')
    out = tmp_path / 'out'
    result = infer(random_checkpoint, str(folder), str(out), '--output-types', 'pha', 'com', '--seq-length', '2')
    assert result.returncode != 0 and '0005.png cannot be decoded' in result.stderr
    assert os.listdir(out) == []


def test_bad_flags(random_checkpoint, video, tmp_path):
    out = tmp_path / 'out'
    assert_fails_cleanly(infer(random_checkpoint, video, str(out), '--fp16'), '--fp16 needs a CUDA device', out)
    assert_fails_cleanly(infer(random_checkpoint, video, str(out), '--composite-background', 'blue'),
                         '--composite-background blue', out)
    assert_fails_cleanly(infer(random_checkpoint, video, str(out), '--downsample-ratio', '2'),
                         '--downsample-ratio', out)
