"""inference.py on generated videos and frame folders: outputs, streaming, the HD paths and bad input.

Each start of a Python with torch takes ~5 s on the 2-core machine, so two tests run the script as a user does
(exit code, stderr) and the others call inference.main() in this process: sys.exit('error: ...') is the same
SystemExit there.
"""
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import inference
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


@pytest.fixture(scope='module')
def frame_folder(video, tmp_path_factory) -> str:
    """The video's frames as 0000.png, 0001.png ..."""
    folder = tmp_path_factory.mktemp('frames')
    for index, frame in enumerate(read_video(video)[0]):
        cv2.imwrite(str(folder / f'{index:04d}.png'), frame)
    return str(folder)


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


def arguments(checkpoint: str, source: str, output, *extra: str) -> list[str]:
    return ['--model-backbone', 'mobilenetv2', '--model-checkpoint', str(checkpoint), '--input', str(source),
            '--output-dir', str(output), '--device', 'cpu', *extra]


def infer(checkpoint: str, source: str, output, *extra: str) -> None:
    inference.main(arguments(checkpoint, source, output, *extra))


def infer_error(checkpoint: str, source: str, output, *extra: str) -> str:
    """The one-line message inference.py exits with; asserts nothing was left in `output`."""
    with pytest.raises(SystemExit) as exit_info:
        infer(checkpoint, source, output, *extra)
    assert not os.path.isdir(output) or os.listdir(output) == []
    message = exit_info.value.code
    assert isinstance(message, str) and message.startswith('error: ') and '\n' not in message
    return message


def test_video_outputs_match_the_input(random_checkpoint, video, tmp_path):
    result = run_script('inference.py', *arguments(random_checkpoint, video, tmp_path, '--output-types', 'pha', 'fgr',
                                                   'com', '--seq-length', '4'))
    assert result.returncode == 0, result.stderr
    assert f'{FRAMES} frames matted' in result.stdout
    assert sorted(os.listdir(tmp_path)) == ['com.mp4', 'fgr.mp4', 'pha.mp4']  # no temporary file left
    for name in ('com.mp4', 'fgr.mp4', 'pha.mp4'):
        frames, fps = read_video(str(tmp_path / name))
        assert len(frames) == FRAMES and fps == pytest.approx(FPS)
        assert frames[0].shape == (HEIGHT, WIDTH, 3)


def test_an_error_exits_with_one_line(video, tmp_path):
    result = run_script('inference.py', *arguments(tmp_path / 'missing.pth', video, tmp_path / 'out'))
    assert result.returncode == 1 and 'Traceback' not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == f'error: checkpoint {tmp_path / "missing.pth"} does not exist: ' \
                                                     f'check the path'
    assert not (tmp_path / 'out').exists()


def test_png_output_chunked_equals_one_pass(random_checkpoint, video, tmp_path):
    for seq_length in ('3', '10'):
        infer(random_checkpoint, video, tmp_path / seq_length, '--output-types', 'pha', 'fgr', '--output-format',
              'png', '--seq-length', seq_length)
    assert sorted(os.listdir(tmp_path / '3')) == ['fgr', 'pha']
    names = sorted(os.listdir(tmp_path / '3' / 'pha'))
    assert names == [f'{t:06d}.png' for t in range(FRAMES)]
    for kind in ('pha', 'fgr'):
        for name in names:
            chunked = cv2.imread(str(tmp_path / '3' / kind / name), cv2.IMREAD_UNCHANGED).astype(int)
            whole = cv2.imread(str(tmp_path / '10' / kind / name), cv2.IMREAD_UNCHANGED).astype(int)
            assert chunked.shape == ((HEIGHT, WIDTH) if kind == 'pha' else (HEIGHT, WIDTH, 3))
            assert np.abs(chunked - whole).max() <= 1


def test_frames_are_read_one_chunk_at_a_time():
    taken = []

    def frames():
        for index in range(10):
            taken.append(index)
            yield index

    stream = inference.chunks(frames(), 4, None)
    assert next(stream) == [0, 1, 2, 3] and taken == [0, 1, 2, 3]
    assert list(stream) == [[4, 5, 6, 7], [8, 9]]
    taken.clear()
    assert list(inference.chunks(frames(), 4, 6)) == [[0, 1, 2, 3], [4, 5]] and len(taken) == 6


def test_frame_folder_input_with_fps_and_num_frames(random_checkpoint, frame_folder, tmp_path):
    infer(random_checkpoint, frame_folder, tmp_path, '--fps', '25', '--num-frames', '7', '--seq-length', '3')
    frames, fps = read_video(str(tmp_path / 'com.mp4'))
    assert len(frames) == 7 and fps == pytest.approx(25) and frames[0].shape == (HEIGHT, WIDTH, 3)


def test_odd_frame_size_warns_for_mp4_and_png_keeps_every_pixel(random_checkpoint, frame_folder, tmp_path, capsys):
    odd = tmp_path / 'odd'
    odd.mkdir()
    for name in sorted(os.listdir(frame_folder))[:2]:
        cv2.imwrite(str(odd / name), cv2.imread(os.path.join(frame_folder, name))[:HEIGHT - 1, :WIDTH - 1])
    infer(random_checkpoint, odd, tmp_path / 'video', '--output-types', 'pha')
    assert f'{WIDTH - 1}x{HEIGHT - 1} frames are written as {WIDTH - 2}x{HEIGHT - 2}' in capsys.readouterr().err
    assert read_video(str(tmp_path / 'video' / 'pha.mp4'))[0][0].shape == (HEIGHT - 2, WIDTH - 2, 3)
    infer(random_checkpoint, odd, tmp_path / 'png', '--output-types', 'pha', '--output-format', 'png')
    assert 'warning' not in capsys.readouterr().err
    assert cv2.imread(str(tmp_path / 'png' / 'pha' / '000000.png'), cv2.IMREAD_UNCHANGED).shape == (HEIGHT - 1,
                                                                                                   WIDTH - 1)


@pytest.mark.parametrize('extra', [['--downsample-ratio', '0.5'],
                                   ['--model-refine', '--refine-backbone-scale', '0.5', '--refine-mode', 'full']])
def test_high_resolution_paths_keep_the_frame_size(random_checkpoint, random_refine_checkpoint, video, tmp_path,
                                                   extra):
    checkpoint = random_refine_checkpoint if '--model-refine' in extra else random_checkpoint
    infer(checkpoint, video, tmp_path, '--output-types', 'pha', 'com', '--output-format', 'png', *extra)
    assert len(os.listdir(tmp_path / 'pha')) == FRAMES and len(os.listdir(tmp_path / 'com')) == FRAMES
    assert cv2.imread(str(tmp_path / 'pha' / '000009.png')).shape == (HEIGHT, WIDTH, 3)


def test_composite_onto_a_colour_or_an_image_where_alpha_is_zero(video, tmp_path):
    torch.manual_seed(0)
    model = MattingBase('mobilenetv2')
    with torch.no_grad():
        model.decoder.conv4.bias[0] = -100.0  # alpha 0 everywhere
    checkpoint = tmp_path / 'transparent.pth'
    torch.save(model.state_dict(), checkpoint)
    infer(checkpoint, video, tmp_path / 'colour', '--output-format', 'png', '--composite-background', '#ff0000')
    assert (cv2.imread(str(tmp_path / 'colour' / 'com' / '000003.png')) == (0, 0, 255)).all()  # OpenCV's BGR
    background = tmp_path / 'background.png'
    cv2.imwrite(str(background), np.full((30, 50, 3), (10, 200, 30), np.uint8))
    infer(checkpoint, video, tmp_path / 'image', '--output-format', 'png', '--composite-background', str(background))
    assert (cv2.imread(str(tmp_path / 'image' / 'com' / '000003.png')) == (10, 200, 30)).all()


def test_bad_checkpoints(random_checkpoint, video, tmp_path):
    out = tmp_path / 'out'
    assert 'missing.pth does not exist' in infer_error(tmp_path / 'missing.pth', video, out)
    corrupt = tmp_path / 'corrupt.pth'
    corrupt.write_bytes(Path(random_checkpoint).read_bytes()[:5000])
    assert f'checkpoint {corrupt} is corrupt or truncated' in infer_error(corrupt, video, out)
    other = tmp_path / 'resnet50.pth'
    torch.save(MattingBase('resnet50').state_dict(), other)
    message = infer_error(other, video, out)
    assert 'made with backbone resnet50' in message and 'the model is mobilenetv2' in message


def test_bad_inputs_and_outputs(random_checkpoint, video, tmp_path):
    out = tmp_path / 'out'
    broken = tmp_path / 'broken.mp4'
    broken.write_bytes(b'not a video at all' * 10)
    assert f'--input {broken} cannot be read as a video' in infer_error(random_checkpoint, broken, out)
    assert 'nothing.mp4 does not exist' in infer_error(random_checkpoint, tmp_path / 'nothing.mp4', out)
    empty = tmp_path / 'empty'
    empty.mkdir()
    assert f'--input {empty} holds no' in infer_error(random_checkpoint, empty, out)
    taken = tmp_path / 'taken'
    taken.write_text('')
    assert f'--output-dir {taken} is a file' in infer_error(random_checkpoint, video, taken)
    assert f'--output-dir {taken / "out"}: {taken} is a file' in infer_error(random_checkpoint, video, taken / 'out')
    assert taken.read_text() == ''
    assert '--fps 0.0: give a frame rate above 0' in infer_error(random_checkpoint, video, out, '--fps', '0')


def test_a_corrupt_frame_leaves_no_partial_output(random_checkpoint, frame_folder, tmp_path):
    folder = tmp_path / 'frames'
    shutil.copytree(frame_folder, folder)
    (folder / '0005.png').write_bytes(b'garbage')
    for output_format in ('video', 'png'):
        message = infer_error(random_checkpoint, folder, tmp_path / output_format, '--output-types', 'pha', 'com',
                              '--seq-length', '2', '--output-format', output_format)
        assert '0005.png cannot be decoded' in message


@pytest.mark.parametrize('extra, expected', [
    (['--fp16'], '--fp16 needs a CUDA device'),
    (['--device', 'gpu'], '--device gpu is not a torch device'),
    (['--composite-background', 'blue'], '--composite-background blue'),
    (['--downsample-ratio', '2'], '--downsample-ratio 2.0'),
    (['--num-frames', '0'], '--num-frames must be at least 1'),
    (['--model-refine', '--downsample-ratio', '0.5'], 'holds no trained refiner'),
    (['--model-refine', '--refine-backbone-scale', '1'], '--refine-backbone-scale 1.0'),
])
def test_bad_flags(random_checkpoint, video, tmp_path, extra, expected):
    assert expected in infer_error(random_checkpoint, video, tmp_path / 'out', *extra)
