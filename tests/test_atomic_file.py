"""atomic_file: atomic_write's file appears complete or not at all, with ordinary permissions; a full disk is one
error naming the folder; killed writers' temporaries are cleaned up; write_together; check_output_folder."""
import errno
import io
import os
import shutil
import stat
import subprocess
import tempfile
import time
from types import SimpleNamespace

import pytest
import torch

from atomic_file import HOST, OutputFolderError, atomic_write, check_output_folder, write_together


def test_written_file_replaces_the_old_one_with_umask_permissions(tmp_path):
    path = tmp_path / 'result.txt'
    path.write_text('old')
    with atomic_write(str(path), 'w') as file:
        file.write('new')
    assert path.read_text() == 'new'
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert os.listdir(tmp_path) == ['result.txt']


def test_error_while_writing_keeps_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / 'result.txt'
    path.write_text('old')
    with pytest.raises(RuntimeError):
        with atomic_write(str(path), 'w') as file:
            file.write('half')
            raise RuntimeError('interrupted')
    assert path.read_text() == 'old'
    assert os.listdir(tmp_path) == ['result.txt']


def test_folder_in_the_way_is_named(tmp_path):
    with pytest.raises(IsADirectoryError, match='is a folder'):
        with atomic_write(str(tmp_path)):
            pass


def test_output_folder_check_creates_nothing(tmp_path):
    folder = tmp_path / 'runs' / 'a'
    check_output_folder(str(folder), '--output-dir')
    assert os.listdir(tmp_path) == []


def test_output_folder_blocked_by_a_file_names_the_flag(tmp_path):
    taken = tmp_path / 'taken'
    taken.write_text('kept')
    with pytest.raises(OutputFolderError, match=f'--output-path {taken} is a file: choose a folder'):
        check_output_folder(str(taken), '--output-path')
    with pytest.raises(OutputFolderError, match=f'--log-dir {taken / "log" / "run"}: {taken} is a file, so the folder '
                                                f'cannot be made there'):
        check_output_folder(str(taken / 'log' / 'run'), '--log-dir')
    assert taken.read_text() == 'kept'


def test_output_folder_in_a_folder_without_write_permission(tmp_path, monkeypatch):
    monkeypatch.setattr(os, 'access', lambda path, mode: False)  # as for a user without write permission on tmp_path
    with pytest.raises(OutputFolderError, match=f'--output-dir {tmp_path / "out"}: {tmp_path} is not writable'):
        check_output_folder(str(tmp_path / 'out'), '--output-dir')


class FullDisk(io.RawIOBase):
    """A file that takes `room` bytes, then fails as a full disk does."""

    def __init__(self, file, room: int):
        self.file, self.room = file, room

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, 'No space left on device')
        self.room -= len(data)
        return self.file.write(data)


def test_a_full_disk_names_the_folder_and_keeps_the_old_file(tmp_path):
    path = tmp_path / 'model.pth'
    path.write_text('old')
    with pytest.raises(OutputFolderError, match=f'^{tmp_path}: the disk is full, so model.pth cannot be written'):
        with atomic_write(str(path)) as file:
            file.write(b'half')
            raise OSError(errno.ENOSPC, 'No space left on device')
    # torch.save turns the failed write into a RuntimeError ('enforce fail at inline_container.cc')
    with pytest.raises(OutputFolderError, match='the disk is full'):
        with atomic_write(str(path)) as file:
            torch.save({'weight': torch.zeros(10_000)}, FullDisk(file, 5000))
    assert path.read_text() == 'old'
    assert os.listdir(tmp_path) == ['model.pth']


def test_a_runtime_error_is_a_full_disk_only_when_the_disk_is_nearly_full(tmp_path, monkeypatch):
    path = str(tmp_path / 'model.pth')
    for free, expected in ((0, OutputFolderError), (10 << 30, RuntimeError)):
        monkeypatch.setattr(shutil, 'disk_usage', lambda folder: SimpleNamespace(total=20 << 30, free=free))
        with pytest.raises(expected):
            with atomic_write(path):
                raise RuntimeError('a write failed')
    assert os.listdir(tmp_path) == []


def test_files_written_together_replace_both_or_neither(tmp_path):
    first, second = tmp_path / 'metrics.json', tmp_path / 'metrics.csv'
    first.write_text('old')
    second.mkdir()  # in the way: the second file cannot be written
    with pytest.raises(IsADirectoryError):
        write_together({str(first): b'new', str(second): b'new'})
    assert first.read_text() == 'old' and sorted(os.listdir(tmp_path)) == ['metrics.csv', 'metrics.json']
    second.rmdir()
    write_together({str(first): b'{}', str(second): b'a,b'})
    assert first.read_text() == '{}' and second.read_text() == 'a,b'
    assert sorted(os.listdir(tmp_path)) == ['metrics.csv', 'metrics.json']


@pytest.mark.slow
def test_stale_temporaries_of_killed_writers_are_removed(tmp_path):
    finished = subprocess.Popen(['true'])
    finished.wait()  # its pid now names no process
    dead, alive, day_old = finished.pid, os.getpid(), time.time() - 25 * 3600
    names = {  # name: (modification time, whether a write of result.txt removes it)
        f'.result.txt.{dead}@{HOST}.abcd1234.tmp': (None, True),
        f'.result.txt.{alive}@{HOST}.abcd1234.tmp': (None, False),
        f'.result.txt.{dead}@other-machine.abcd1234.tmp': (None, False),  # its pid may be alive there
        f'.result.txt.{dead}@other-machine.efgh5678.tmp': (day_old, True),
        '.result.txt.abcd1234.tmp': (None, False),  # named before the pid was: a day to finish
        '.result.txt.efgh5678.tmp': (day_old, True),
        f'.other.txt.{dead}@{HOST}.abcd1234.tmp': (None, False),
    }
    for name, (modified, _) in names.items():
        (tmp_path / name).write_text('partial')
        if modified is not None:
            os.utime(tmp_path / name, (modified, modified))
    with atomic_write(str(tmp_path / 'result.txt'), 'w') as file:
        file.write('new')
    kept = sorted(name for name, (_, removed) in names.items() if not removed)
    assert sorted(os.listdir(tmp_path)) == sorted([*kept, 'result.txt'])


@pytest.mark.parametrize('failing', ['mkstemp', 'replace'])
def test_a_folder_turned_read_only_is_named_and_keeps_the_old_file(tmp_path, monkeypatch, failing):
    path = tmp_path / 'metrics.json'
    path.write_text('old')

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, 'Read-only file system')
    target = tempfile if failing == 'mkstemp' else os
    real = getattr(target, failing)
    monkeypatch.setattr(target, failing, read_only)
    monkeypatch.setattr(os, 'remove', read_only)  # the temporary, if any, cannot be removed either
    with pytest.raises(OutputFolderError, match=f'^{tmp_path}: metrics.json cannot be written \\(Read-only file '
                                                f'system\\); make the folder writable or choose another$') as error:
        with atomic_write(str(path), 'w') as file:
            file.write('new')
    assert error.value.reason == 'Read-only file system'
    monkeypatch.setattr(target, failing, real)
    assert path.read_text() == 'old'
