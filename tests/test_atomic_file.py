"""atomic_file: atomic_write's file appears complete or not at all, with ordinary permissions; check_output_folder."""
import os
import stat

import pytest

from atomic_file import OutputFolderError, atomic_write, check_output_folder


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
