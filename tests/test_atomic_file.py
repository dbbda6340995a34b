"""atomic_file.atomic_write: the file appears complete or not at all, with ordinary permissions."""
import os
import stat

import pytest

from atomic_file import atomic_write


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
