"""scripts/extract_frames.py: a round trip of generated videos, resuming, and each bad input."""
import importlib.util
import os
import shutil
import signal
import subprocess
import sys

import cv2
import numpy as np
import pytest

from dataset import make_dataset
from dataset.synthetic import generate, write_video

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'scripts', 'extract_frames.py')


def extract(source, destination) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, SCRIPT, str(source), str(destination), '--workers', '2'],
                          capture_output=True, text=True)


def last_line(result: subprocess.CompletedProcess) -> str:
    return result.stderr.strip().splitlines()[-1]


@pytest.fixture(scope='module')
def generated(tmp_path_factory) -> str:
    """A tiny synthetic dataset with its clips also as videos, in VideoMatte240K's layout, under videos/."""
    root = str(tmp_path_factory.mktemp('generated') / 'synthetic')
    generate(root, width=64, height=48, frames=6, train_clips=2, valid_clips=1, train_backgrounds=1,
             valid_backgrounds=1, videos=True)
    return root


def test_round_trip(generated, tmp_path):
    result = extract(os.path.join(generated, 'videos'), tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f'3 clips extracted, 0 already complete, in {tmp_path}\n'
    for split in ('train', 'valid'):
        for part in ('fgr', 'pha'):
            clips = sorted(os.listdir(os.path.join(generated, split, part)))
            assert sorted(os.listdir(tmp_path / split / part)) == clips
            for clip in clips:
                names = sorted(os.listdir(os.path.join(generated, split, part, clip)))
                assert sorted(os.listdir(tmp_path / split / part / clip)) == names
                for name in names:
                    original = cv2.imread(os.path.join(generated, split, part, clip, name)).astype(float)
                    extracted = cv2.imread(str(tmp_path / split / part / clip / name)).astype(float)
                    assert np.abs(original - extracted).mean() < 6  # MPEG-4 and JPEG are lossy
    data = make_dataset('videomatte240k', 'valid', 4, None, videomatte_root=str(tmp_path),
                        backgrounds_root=os.path.join(generated, 'backgrounds'))
    assert data[0][1].shape == (4, 1, 48, 64)


def test_resumes_after_an_interruption(generated, tmp_path):
    assert extract(os.path.join(generated, 'videos'), tmp_path).returncode == 0
    # As if killed while writing train clip 0001's alpha: fgr complete, pha still under its hidden name.
    shutil.rmtree(tmp_path / 'train' / 'pha' / '0001')
    os.makedirs(tmp_path / 'train' / 'pha' / '.0001.partial')
    untouched = os.stat(tmp_path / 'train' / 'fgr' / '0000' / '00000.jpg').st_mtime_ns
    result = extract(os.path.join(generated, 'videos'), tmp_path)
    assert result.stdout == f'1 clips extracted, 2 already complete, in {tmp_path}\n'
    assert os.stat(tmp_path / 'train' / 'fgr' / '0000' / '00000.jpg').st_mtime_ns == untouched
    assert sorted(os.listdir(tmp_path / 'train' / 'pha')) == ['0000', '0001']
    assert len(os.listdir(tmp_path / 'train' / 'pha' / '0001')) == 6


def test_fgr_and_pha_frame_counts_differ(generated, tmp_path):
    source = tmp_path / 'videos'
    shutil.copytree(os.path.join(generated, 'videos'), source)
    write_video(str(source / 'train' / 'pha' / '0001.mp4'), [np.zeros((48, 64), np.uint8)] * 4)
    result = extract(source, tmp_path / 'frames')
    assert result.returncode == 1
    assert last_line(result) == (f'error: {source}/train/pha/0001.mp4: 4 frames but {source}/train/fgr/0001.mp4 '
                                 f'has 6; fgr and pha must match frame for frame: replace the damaged video or move '
                                 f'the clip away')
    assert not os.path.exists(tmp_path / 'frames' / 'train' / 'fgr' / '0001'), 'no partial clip under its real name'


def test_a_video_opencv_cannot_open(tmp_path):
    for part in ('fgr', 'pha'):
        os.makedirs(tmp_path / 'videos' / 'train' / part)
        (tmp_path / 'videos' / 'train' / part / 'clip.mp4').write_bytes(b'not a video')
    result = extract(tmp_path / 'videos', tmp_path / 'frames')
    assert result.returncode == 1
    assert last_line(result) == (f'error: {tmp_path}/videos/train/fgr/clip.mp4: OpenCV cannot open this video; '
                                 f're-download it or move it away')


def test_missing_pha_video_and_missing_source(generated, tmp_path):
    os.makedirs(tmp_path / 'videos' / 'train' / 'pha')
    shutil.copytree(os.path.join(generated, 'videos', 'train', 'fgr'), tmp_path / 'videos' / 'train' / 'fgr')
    result = extract(tmp_path / 'videos', tmp_path / 'frames')
    assert result.returncode == 1
    assert last_line(result) == (f'error: {tmp_path}/videos/train/fgr/0000.mp4: no video of that name in '
                                 f'{tmp_path}/videos/train/pha; add it or move this one away')
    result = extract(tmp_path / 'nowhere', tmp_path / 'frames')
    assert result.returncode == 1
    assert result.stderr == (f'error: {tmp_path}/nowhere: folder not found; give the folder holding the splits of '
                             f'videos\n')


def test_source_without_videos_and_unwritable_destination(generated, tmp_path):
    for part in ('fgr', 'pha'):
        os.makedirs(tmp_path / 'empty' / 'train' / part)
    result = extract(tmp_path / 'empty', tmp_path / 'frames')
    assert result.returncode == 1 and not (tmp_path / 'frames').exists()
    assert last_line(result).startswith(f'error: {tmp_path}/empty: no videos (.mp4')
    blocker = tmp_path / 'a_file'
    blocker.write_text('')
    result = extract(os.path.join(generated, 'videos'), blocker / 'frames')
    assert result.returncode == 1
    assert last_line(result).startswith(f'error: DESTINATION {blocker}/frames: {blocker} is a file')


spec = importlib.util.spec_from_file_location('extract_frames', SCRIPT)
extract_frames = importlib.util.module_from_spec(spec)
spec.loader.exec_module(extract_frames)


def hidden_folders(folder) -> list[str]:
    return [os.path.join(root, name) for root, names, _ in os.walk(folder) for name in names if name.startswith('.')]


@pytest.mark.parametrize('signum, status', [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_exits_with_its_status_and_leaves_no_partial_clip(generated, tmp_path, monkeypatch, capsys, signum,
                                                                   status):
    written = []

    def interrupted_imwrite(*args):
        written.append(args[0])
        if len(written) == 15:  # the third fgr frame of the second clip: the first clip has 6 fgr and 6 pha frames
            os.kill(os.getpid(), signum)
        return imwrite(*args)
    imwrite = cv2.imwrite
    monkeypatch.setattr(cv2, 'imwrite', interrupted_imwrite)
    with pytest.raises(SystemExit) as exit_info:
        extract_frames.main([os.path.join(generated, 'videos'), str(tmp_path), '--workers', '1'])
    assert exit_info.value.code == status
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == 'interrupted: complete clips are kept; run again to extract the others'
    assert 'Traceback' not in err and hidden_folders(tmp_path) == []
    monkeypatch.setattr(cv2, 'imwrite', imwrite)
    extract_frames.main([os.path.join(generated, 'videos'), str(tmp_path), '--workers', '2'])
    assert capsys.readouterr().out == f'2 clips extracted, 1 already complete, in {tmp_path}\n'


def test_a_destination_whose_frames_would_replace_the_source_is_refused(generated, tmp_path):
    destination = tmp_path / 'frames'
    source = destination / 'train' / 'fgr' / '0000'  # where the frames of clip 0000 would go
    for part in ('fgr', 'pha'):
        os.makedirs(source / 'train' / part)
        shutil.copy(os.path.join(generated, 'videos', 'train', part, '0000.mp4'), source / 'train' / part)
    result = extract(source, destination)
    assert result.returncode == 1
    assert last_line(result) == f'error: {source}, where frames would be written, is a video of SOURCE {source} or ' \
                                f'holds them: choose a DESTINATION apart from SOURCE'
    assert sorted(os.listdir(source / 'train' / 'fgr')) == ['0000.mp4']
    assert sorted(os.listdir(source / 'train' / 'pha')) == ['0000.mp4']
