"""checkpoint.py: the checksum that tells a checkpoint whose bytes changed on disk, and FolderLock, the lock of a
checkpoint folder: one holder among processes that take it at once, a lock being made is not stale, and anything
else at .lock is one error naming it."""
import argparse
import errno
import multiprocessing
import os
import stat
import subprocess
import sys
import time
import zipfile

import pytest
import torch

import checkpoint
from atomic_file import HOST
from checkpoint import CheckpointError, FolderLock, read_checkpoint, save_checkpoint
from model import MattingBase


def test_bytes_changed_inside_a_checkpoint_are_refused_naming_it(tmp_path):
    model = MattingBase('mobilenetv2')
    optimizer = torch.optim.AdamW(model.parameters())
    path = save_checkpoint(str(tmp_path), model, optimizer, torch.amp.GradScaler('cpu', enabled=False),
                           argparse.Namespace(model_backbone='mobilenetv2'), 0, 3, 3)
    assert read_checkpoint(path)['step'] == 3
    with zipfile.ZipFile(path) as archive:  # the largest tensor's bytes, as a bad disk or a stray write changes them
        largest = max(archive.infolist(), key=lambda entry: entry.file_size)
    with open(path, 'r+b') as file:
        file.seek(largest.header_offset + 30 + len(largest.filename) + 2048)
        file.write(b'\xff' * 4096)
    assert torch.load(path, map_location='cpu', weights_only=False)['step'] == 3, 'torch.load does not notice'
    with pytest.raises(CheckpointError, match=f'^checkpoint {path} is corrupt: the bytes of its record '
                                              f'{largest.filename} no longer match the CRC-32 saved with them'):
        read_checkpoint(path)


def test_a_checkpoint_edited_on_purpose_still_reads(tmp_path):
    path = str(tmp_path / 'edited.pth')
    torch.save({'model': MattingBase('mobilenetv2').state_dict(), 'optimizer': {}}, path)
    edited = torch.load(path, map_location='cpu', weights_only=False)
    edited['model'] = {name: tensor for name, tensor in edited['model'].items() if 'convlstm' not in name}
    edited['model']['aspp.convs.0.0.weight'].fill_(0.5)
    torch.save(edited, path)
    assert read_checkpoint(path)['model']['aspp.convs.0.0.weight'].eq(0.5).all()


def dead_pid() -> int:
    finished = subprocess.Popen(['true'])
    finished.wait()
    return finished.pid


def test_an_empty_lock_is_one_being_made_until_it_is_old(tmp_path):
    lock_path = tmp_path / '.lock'
    lock_path.write_text('')  # another process has created it and not yet written its id
    with pytest.raises(CheckpointError, match=f'--checkpoint-dir {tmp_path} is in use by a process taking it now'):
        FolderLock(str(tmp_path), '--checkpoint-dir').acquire()
    assert lock_path.read_text() == ''
    old = time.time() - 2 * checkpoint.EMPTY_LOCK_SECONDS  # left empty by a crash long ago: taken over
    os.utime(lock_path, (old, old))
    lock = FolderLock(str(tmp_path), '--checkpoint-dir')
    lock.acquire()
    assert lock_path.read_text() == f'{os.getpid()} {HOST}\n'
    assert stat.S_IMODE(lock_path.stat().st_mode) == 0o644, "readable by other users' runs"
    lock.release()
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize('make, message', [
    (lambda path: path.write_text('garbage\x00\n'), "holds 'garbage\\\\x00\\\\n', not a lock train.py wrote"),
    (lambda path: path.write_bytes(b'\xff\xfe'), r'cannot read the lock .* \(not text\)'),
    (lambda path: path.mkdir(), 'is a folder, not the lock file train.py writes'),
])
def test_anything_else_at_lock_is_named_and_kept(tmp_path, make, message):
    folder = tmp_path / 'checkpoint'
    folder.mkdir()
    make(folder / '.lock')
    with pytest.raises(CheckpointError, match=message) as error:
        FolderLock(str(folder), '--checkpoint-dir').acquire()
    assert str(folder / '.lock') in str(error.value)
    assert os.listdir(folder) == ['.lock']


def test_an_unreadable_lock_is_named(tmp_path, monkeypatch):
    (tmp_path / '.lock').write_text('1 host\n')

    def unreadable(path, *args, **kwargs):  # as for another user's lock without read permission (tests run as root)
        raise PermissionError(errno.EACCES, 'Permission denied', path)
    monkeypatch.setattr(checkpoint, 'open', unreadable, raising=False)
    with pytest.raises(CheckpointError, match=f'cannot read the lock {tmp_path / ".lock"} \\(Permission denied\\): '
                                              f'if no run uses {tmp_path}, remove it'):
        FolderLock(str(tmp_path), '--checkpoint-dir').acquire()


def test_release_keeps_a_lock_taken_over_by_another_and_survives_a_read_only_folder(tmp_path, monkeypatch):
    lock = FolderLock(str(tmp_path), '--checkpoint-dir')
    lock.acquire()
    (tmp_path / '.lock').write_text(f'1 {HOST}\n')  # another process's now
    lock.release()
    assert (tmp_path / '.lock').read_text() == f'1 {HOST}\n'
    (tmp_path / '.lock').unlink()

    lock.acquire()

    def read_only(path, *args, **kwargs):
        raise OSError(errno.EROFS, 'Read-only file system', path)
    monkeypatch.setattr(os, 'remove', read_only)
    lock.release()  # no error: the next run takes the lock of a process that is gone over
    monkeypatch.undo()
    assert (tmp_path / '.lock').read_text() == f'{os.getpid()} {HOST}\n'


def take(folder: str, barrier, results) -> None:
    """In a child process: try to take the lock at the same moment as the others; hold it until all have tried."""
    lock = FolderLock(folder, '--checkpoint-dir')
    barrier.wait()
    try:
        lock.acquire()
        results.put('held')
    except CheckpointError as error:
        results.put(str(error))
    barrier.wait()
    lock.release()


@pytest.mark.parametrize('stale', [False, True], ids=['free', 'stale'])
def test_processes_taking_the_lock_at_once_get_one_holder(tmp_path, stale):
    context = multiprocessing.get_context('fork')
    for round_ in range(8):
        folder = tmp_path / str(round_)
        folder.mkdir()
        if stale:  # a killed run's lock: every process takes it for stale at once
            (folder / '.lock').write_text(f'{dead_pid()} {HOST}\n')
        barrier, results = context.Barrier(4), context.Queue()
        processes = [context.Process(target=take, args=(str(folder), barrier, results)) for _ in range(4)]
        for process in processes:
            process.start()
        outcomes = [results.get(timeout=60) for _ in processes]
        for process in processes:
            process.join(timeout=60)
        assert outcomes.count('held') == 1, outcomes
        assert all('is in use by process' in outcome for outcome in outcomes if outcome != 'held')
        assert os.listdir(folder) == []


def test_a_killed_lock_takers_temporaries_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'], capture_output=True, text=True)
    pid = int(dead.stdout)
    left = [tmp_path / f'..lock.{pid}@{HOST}.x1y2.tmp', tmp_path / f'..lock.takeover.{pid}@{HOST}.x1y2.tmp']
    for path in left:
        path.write_text(f'{pid} {HOST}\n')
    lock = FolderLock(str(tmp_path), '--checkpoint-dir')
    lock.acquire()
    assert not any(path.exists() for path in left)
    lock.release()
