"""inference.py on generated videos and frame folders: outputs, streaming, the HD paths and bad input.

Each start of a Python with torch takes ~5 s on the 2-core machine, so two tests run the script as a user does
(exit code, stderr) and the others call inference.main() in this process: sys.exit('error: ...') is the same
SystemExit there.
"""
import math
import os
import shutil
import signal
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import devices
import inference
from atomic_file import HOST
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


@pytest.mark.slow
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


@pytest.mark.slow
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
    (['--precision', 'fp16'], '--precision fp16 needs a CUDA device'),
    (['--fp16', '--precision', 'bf16'], '--fp16 and --precision bf16 disagree'),
    (['--device', 'gpu'], '--device gpu is not a torch device'),
    (['--composite-background', 'blue'], '--composite-background blue'),
    (['--downsample-ratio', '2'], '--downsample-ratio 2.0'),
    (['--num-frames', '0'], '--num-frames must be at least 1'),
    (['--model-refine', '--downsample-ratio', '0.5'], 'holds no trained refiner'),
    (['--model-refine', '--refine-backbone-scale', '1'], '--refine-backbone-scale 1.0'),
])
def test_bad_flags(random_checkpoint, video, tmp_path, extra, expected):
    assert expected in infer_error(random_checkpoint, video, tmp_path / 'out', *extra)


def matted_chunks(monkeypatch, checkpoint: str, source: str, output, *extra: str) -> list[tuple[torch.Tensor, ...]]:
    """(src, pha, fgr) of every chunk inference.py runs through the network on `source`."""
    chunks = []

    def recording_run_model(model, src, state, downsample_ratio):
        pha, fgr, state = run_model(model, src, state, downsample_ratio)
        chunks.append((src, pha, fgr))
        return pha, fgr, state
    run_model = inference.run_model
    monkeypatch.setattr(inference, 'run_model', recording_run_model)
    infer(checkpoint, source, output, '--output-format', 'png', '--seq-length', '4', *extra)
    return chunks


def test_precision_fp32_is_the_eager_model(monkeypatch, random_checkpoint, video, tmp_path):
    chunks = matted_chunks(monkeypatch, random_checkpoint, video, tmp_path, '--precision', 'fp32')
    model = MattingBase('mobilenetv2').eval()
    model.load_state_dict(torch.load(random_checkpoint))
    state = None
    with torch.no_grad():
        for src, pha, fgr in chunks:
            expected_pha, expected_fgr, _, _, state = model(src, state)
            assert pha.dtype == torch.float32
            assert (pha - expected_pha).abs().max() < 1e-4 and (fgr - expected_fgr).abs().max() < 1e-4
    assert sum(src.shape[1] for src, _, _ in chunks) == FRAMES


@pytest.mark.parametrize('cpu_dtype, flags, expected', [
    (torch.bfloat16, [], torch.bfloat16),  # --precision auto: bf16 where the CPU has bf16 instructions
    (None, [], torch.float32),  # and fp32 where it has not
    (torch.bfloat16, ['--no-fp16'], torch.float32),  # the older spelling of --precision fp32
])
def test_precision_auto_uses_bf16_only_where_the_cpu_has_it(monkeypatch, random_checkpoint, video, tmp_path,
                                                            cpu_dtype, flags, expected):
    monkeypatch.setattr(devices, 'low_precision_dtype', lambda device: cpu_dtype)
    chunks = matted_chunks(monkeypatch, random_checkpoint, video, tmp_path, *flags)
    assert {pha.dtype for _, pha, _ in chunks} == {expected}


def test_precision_bf16_on_a_cpu_without_it_is_an_error(monkeypatch, random_checkpoint, video, tmp_path):
    monkeypatch.setattr(devices, 'low_precision_dtype', lambda device: None)
    message = infer_error(random_checkpoint, video, tmp_path / 'out', '--precision', 'bf16')
    assert message.startswith('error: --precision bf16: ') and 'has no bfloat16 instructions' in message


class FullDiskVideoWriter:
    """cv2.VideoWriter on a disk that fills up: the end of the file, with the index of its frames, never arrives;
    with `fail_writes` write() says so, as OpenCV 5 does."""

    def __init__(self, real_writer, fail_writes: bool, path: str, *args):
        self.writer, self.fail_writes, self.path = real_writer(path, *args), fail_writes, path

    def isOpened(self) -> bool:
        return self.writer.isOpened()

    def write(self, image: np.ndarray) -> bool | None:
        written = self.writer.write(image)
        return False if self.fail_writes else written

    def release(self) -> None:
        self.writer.release()
        with open(self.path, 'r+b') as file:
            file.truncate(os.path.getsize(self.path) // 2)


@pytest.mark.parametrize('fail_writes', [False, True])
def test_a_full_disk_keeps_the_earlier_video(random_checkpoint, video, tmp_path, monkeypatch, fail_writes):
    infer(random_checkpoint, video, tmp_path, '--output-types', 'fgr', '--num-frames', '4')
    earlier = (tmp_path / 'fgr.mp4').read_bytes()
    real_writer = cv2.VideoWriter
    monkeypatch.setattr(cv2, 'VideoWriter', lambda *args: FullDiskVideoWriter(real_writer, fail_writes, *args))
    with pytest.raises(SystemExit) as exit_info:
        infer(random_checkpoint, video, tmp_path, '--output-types', 'fgr')
    message = exit_info.value.code
    assert message.startswith(f'error: cannot write {tmp_path / "fgr.mp4"}: ') and '\n' not in message
    assert message.endswith('check the free disk space')
    assert (tmp_path / 'fgr.mp4').read_bytes() == earlier and os.listdir(tmp_path) == ['fgr.mp4']


def test_a_checkpoint_with_non_finite_outputs_writes_nothing(nan_checkpoint, video, tmp_path):
    for output_format in ('video', 'png'):
        message = infer_error(nan_checkpoint, video, tmp_path / output_format, '--output-format', output_format)
        assert message == f'error: checkpoint {nan_checkpoint} outputs non-finite values (NaN or inf): retrain it ' \
                          f'with lower learning rates or use an earlier checkpoint'


def test_a_downsample_ratio_that_leaves_no_pixel_names_the_smallest_that_works(random_checkpoint, video, tmp_path):
    message = infer_error(random_checkpoint, video, tmp_path / 'out', '--downsample-ratio', '0.01')
    assert message == f'error: --downsample-ratio 0.01 shrinks the {WIDTH}x{HEIGHT} frames to 0x0, too small for ' \
                      f'the network: use 0.021 or more'
    assert not (tmp_path / 'out').exists()
    infer(random_checkpoint, video, tmp_path / 'out', '--downsample-ratio', '0.021', '--num-frames', '2')
    assert len(read_video(str(tmp_path / 'out' / 'com.mp4'))[0]) == 2


def exit_message(checkpoint: str, source: str, output, *extra: str) -> str:
    """The one-line message inference.py exits with, where the output folder holds other files."""
    with pytest.raises(SystemExit) as exit_info:
        infer(checkpoint, source, output, *extra)
    message = exit_info.value.code
    assert isinstance(message, str) and message.startswith('error: ') and '\n' not in message
    return message


def snapshot(folder) -> dict[str, bytes]:
    """Every file under `folder`, {relative path: content}."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in Path(folder).rglob('*') if path.is_file()}


def test_an_output_never_overwrites_or_deletes_an_input(random_checkpoint, video, frame_folder, tmp_path):
    folder = tmp_path / 'X'
    folder.mkdir()
    shutil.copy(video, folder / 'pha.mp4')
    shutil.copy(video, folder / 'com.mp4')
    shutil.copytree(frame_folder, folder / 'com')
    shutil.copytree(frame_folder, folder / 'fgr' / 'frames')
    shutil.copy(random_checkpoint, folder / 'fgr.mp4')
    before = snapshot(folder)
    cases = [  # (input, checkpoint, flags, the input named)
        (folder / 'pha.mp4', random_checkpoint, ['--output-types', 'pha'], '--input'),
        (folder / 'fgr' / '..' / 'com.mp4', random_checkpoint, [], '--input'),  # another spelling
        (folder / 'com', random_checkpoint, ['--output-format', 'png'], '--input'),
        (folder / 'fgr' / 'frames', random_checkpoint, ['--output-format', 'png', '--output-types', 'fgr'],
         '--input'),
        (video, folder / 'fgr.mp4', ['--output-types', 'fgr'], '--model-checkpoint'),
        (video, random_checkpoint, ['--output-types', 'com', '--composite-background', str(folder / 'com.mp4')],
         '--composite-background'),
    ]
    for source, checkpoint, flags, named in cases:
        message = exit_message(checkpoint, source, folder, *flags)
        assert message.startswith(f'error: {named} ') and message.endswith('choose another --output-dir'), message
        assert ('is also an output of this run' in message) or ('lies inside' in message and 'replaces' in message)
    # A hard link to the video is the same file under another name.
    (tmp_path / 'Y').mkdir()
    os.link(video, tmp_path / 'Y' / 'pha.mp4')
    message = exit_message(random_checkpoint, video, tmp_path / 'Y', '--output-types', 'pha')
    assert message == f'error: --input {video} is also an output of this run ({tmp_path / "Y" / "pha.mp4"}), which ' \
                      f'would overwrite it: choose another --output-dir'
    assert snapshot(folder) == before


def test_a_png_folder_holding_other_files_is_refused_and_kept(random_checkpoint, video, tmp_path):
    fgr = tmp_path / 'fgr'
    (fgr / 'sub').mkdir(parents=True)
    (fgr / 'notes.txt').write_text('mine')
    (fgr / 'sub' / 'data.bin').write_bytes(b'\x00\x01')
    (fgr / '000000.png').write_bytes(b'an earlier frame')
    before = snapshot(tmp_path)
    message = exit_message(random_checkpoint, video, tmp_path, '--output-format', 'png', '--output-types', 'fgr')
    assert message == f'error: {fgr} holds notes.txt, sub, which inference.py did not write; the earlier frames ' \
                      f'there would be replaced: move those away or choose another --output-dir'
    assert snapshot(tmp_path) == before
    (tmp_path / 'pha.mp4').mkdir()
    message = exit_message(random_checkpoint, video, tmp_path, '--output-types', 'pha')
    assert message.startswith(f'error: {tmp_path / "pha.mp4"} is a folder, where the video goes')
    (tmp_path / 'com').write_text('a file')
    message = exit_message(random_checkpoint, video, tmp_path, '--output-format', 'png')
    assert message.startswith(f'error: {tmp_path / "com"} is a file, where the PNG frames go')
    assert snapshot(tmp_path) == before | {'com': b'a file'}


def test_earlier_png_frames_are_replaced_with_the_new_ones(random_checkpoint, video, tmp_path):
    infer(random_checkpoint, video, tmp_path, '--output-format', 'png', '--output-types', 'pha')
    assert len(os.listdir(tmp_path / 'pha')) == FRAMES
    infer(random_checkpoint, video, tmp_path, '--output-format', 'png', '--output-types', 'pha', '--num-frames', '3')
    assert sorted(os.listdir(tmp_path / 'pha')) == ['000000.png', '000001.png', '000002.png']
    assert os.listdir(tmp_path) == ['pha']


def test_frames_too_small_for_the_mp4_encoder(random_checkpoint, tmp_path):
    frames = tmp_path / 'frames'
    frames.mkdir()
    for index in range(3):
        cv2.imwrite(str(frames / f'{index}.png'), np.full((1, 1, 3), 90 * index, np.uint8))
    out = tmp_path / 'new' / 'out'
    message = infer_error(random_checkpoint, frames, out, '--output-types', 'pha')
    assert message == f'error: --input {frames} has 1x1 frames, too small for the mp4 encoder (2x2 pixels at least): ' \
                      f'use --output-format png'
    assert not (tmp_path / 'new').exists()
    infer(random_checkpoint, frames, out, '--output-types', 'pha', '--output-format', 'png')
    assert cv2.imread(str(out / 'pha' / '000002.png'), cv2.IMREAD_UNCHANGED).shape == (1, 1)


def test_a_failed_run_removes_the_folders_it_made(random_checkpoint, frame_folder, tmp_path):
    folder = tmp_path / 'frames'
    shutil.copytree(frame_folder, folder)
    (folder / '0005.png').write_bytes(b'garbage')
    infer_error(random_checkpoint, folder, tmp_path / 'a' / 'b', '--seq-length', '2')
    assert os.listdir(tmp_path) == ['frames']


@pytest.mark.parametrize('signum, status', [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_exits_with_its_status_and_writes_nothing(monkeypatch, random_checkpoint, video, tmp_path, capsys,
                                                           signum, status):
    infer(random_checkpoint, video, tmp_path / 'out', '--output-types', 'pha', '--num-frames', '2')
    earlier = snapshot(tmp_path)

    def interrupted_run_model(*args):
        outputs = run_model(*args)
        os.kill(os.getpid(), signum)  # Ctrl-C or kill, while the outputs are being written
        return outputs
    run_model = inference.run_model
    monkeypatch.setattr(inference, 'run_model', interrupted_run_model)
    for output in (tmp_path / 'out', tmp_path / 'new'):
        with pytest.raises(SystemExit) as exit_info:
            infer(random_checkpoint, video, output, '--output-types', 'pha', 'com', '--seq-length', '2')
        assert exit_info.value.code == status
        assert capsys.readouterr().err.strip().splitlines()[-1] == \
            'interrupted: nothing written; the earlier outputs in --output-dir are kept'
    assert snapshot(tmp_path) == earlier and not (tmp_path / 'new').exists()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


@pytest.mark.parametrize('cpu_dtype, flags, expected', [(None, [], 'fp32'), (torch.bfloat16, [], 'bf16 autocast'),
                                                        (torch.bfloat16, ['--precision', 'fp32'], 'fp32')])
def test_the_device_and_precision_are_said(monkeypatch, random_checkpoint, video, tmp_path, capsys, cpu_dtype, flags,
                                           expected):
    monkeypatch.setattr(devices, 'low_precision_dtype', lambda device: cpu_dtype)
    infer(random_checkpoint, video, tmp_path, '--num-frames', '1', *flags)
    assert f'matting on cpu ({devices.device_name("cpu")}) in {expected}\n' in capsys.readouterr().out


def refine_checkpoint_lacking(tmp_path, random_refine_checkpoint, keep: str) -> Path:
    """The refiner checkpoint with every refiner.* tensor removed but `keep`."""
    state_dict = torch.load(random_refine_checkpoint)
    partial = {name: tensor for name, tensor in state_dict.items() if not name.startswith('refiner.') or name == keep}
    path = tmp_path / 'partial.pth'
    torch.save(partial, path)
    return path


def test_a_checkpoint_lacking_tensors_is_refused(random_refine_checkpoint, random_checkpoint, video, tmp_path):
    partial = refine_checkpoint_lacking(tmp_path, random_refine_checkpoint, keep='refiner.conv4.bias')
    message = infer_error(partial, video, tmp_path / 'out', '--model-refine')
    assert message.startswith(f'error: checkpoint {partial} does not fit MattingRefine: it lacks 19 of its ')
    assert 'tensors (refiner.conv1.weight, refiner.bn1.weight, refiner.bn1.bias, refiner.bn1.running_mean and 15 ' \
           'more), which would run with random weights' in message
    state_dict = torch.load(random_checkpoint)
    del state_dict['decoder.conv4.weight']
    torch.save(state_dict, tmp_path / 'base.pth')
    message = infer_error(tmp_path / 'base.pth', video, tmp_path / 'out')
    assert 'does not fit MattingBase: it lacks 1 of its' in message and '(decoder.conv4.weight)' in message


def test_a_checkpoint_with_non_finite_weights_is_refused(random_checkpoint, video, tmp_path):
    state_dict = torch.load(random_checkpoint)
    state_dict['decoder.conv4.weight'][10] = math.nan  # a hidden channel, which no output of MattingBase reads
    torch.save(state_dict, tmp_path / 'nan.pth')
    message = infer_error(tmp_path / 'nan.pth', video, tmp_path / 'out')
    assert message == f'error: checkpoint {tmp_path / "nan.pth"} holds non-finite values (NaN or inf) in ' \
                      f'decoder.conv4.weight: retrain it with lower learning rates or use an earlier checkpoint'


def test_temporaries_of_killed_runs_go_and_those_of_live_runs_stay(random_checkpoint, video, tmp_path):
    """Each run writes its own temporaries (runs may share --output-dir); a later run removes those a killed run of
    this machine left, and keeps another live run's."""
    dead = max_pid() + 1  # no process has it
    left = {f'.pha.{dead}@{HOST}.partial.mp4': 'killed', f'.pha.{os.getppid()}@{HOST}.partial.mp4': 'live',
            f'.pha.{dead}@another-host.partial.mp4': 'elsewhere', f'.com.{dead}@{HOST}.partial': 'killed'}
    for name, kind in left.items():
        if name.endswith('.mp4'):
            (tmp_path / name).write_text(kind)
        else:
            (tmp_path / name).mkdir()
    infer(random_checkpoint, video, tmp_path, '--output-types', 'pha', '--num-frames', '2')
    infer(random_checkpoint, video, tmp_path, '--output-types', 'com', '--num-frames', '2', '--output-format', 'png')
    assert sorted(os.listdir(tmp_path)) == sorted(['com', 'pha.mp4', *(name for name, kind in left.items()
                                                                       if kind != 'killed')])


def max_pid() -> int:
    with open('/proc/sys/kernel/pid_max') as file:
        return int(file.read())


def test_png_output_replaces_nothing_when_its_folder_gained_other_files(tmp_path):
    earlier = tmp_path / 'pha'
    earlier.mkdir()
    (earlier / '000000.png').write_bytes(b'earlier frame')
    output = inference.Output(str(tmp_path), 'pha', 'png')
    output.check()
    output.open(30, (4, 4))
    output.write(torch.zeros(1, 1, 4, 4))
    (earlier / 'notes.txt').write_text('put there during the run')
    with pytest.raises(inference.InferenceError, match='gained other files'):
        output.commit()
    assert sorted(os.listdir(earlier)) == ['000000.png', 'notes.txt']
    assert (earlier / '000000.png').read_bytes() == b'earlier frame'
    output.discard()
    assert sorted(os.listdir(tmp_path)) == ['pha']


def test_png_output_replaces_the_earlier_frames(tmp_path):
    earlier = tmp_path / 'pha'
    earlier.mkdir()
    for index in range(3):
        (earlier / f'{index:06d}.png').write_bytes(b'earlier frame')
    output = inference.Output(str(tmp_path), 'pha', 'png')
    output.check()
    output.open(30, (4, 4))
    output.write(torch.zeros(1, 1, 4, 4))
    output.commit()
    assert os.listdir(tmp_path) == ['pha'] and os.listdir(earlier) == ['000000.png']
    assert (earlier / '000000.png').read_bytes() != b'earlier frame'
