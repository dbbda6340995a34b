"""validate.py end to end on the tiny synthetic dataset with a checkpoint from a short train.py run."""
import csv
import errno
import json
import math
import os
import select
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

import validate
from atomic_file import OutputFolderError
from devices import low_precision_dtype
from script_runner import REPO, run_script, signal_when_called


def validate_args(root: str, checkpoint: str, output: str, *extra: str) -> list[str]:
    """validate.py flags for the tiny synthetic dataset on disk at `root`, read as a VideoMatte dataset."""
    return ['--dataset-name', 'videomatte240k', '--videomatte-root', root,
            '--backgrounds-root', os.path.join(root, 'backgrounds'), '--model-backbone', 'mobilenetv2',
            '--model-checkpoint', checkpoint, '--output-path', output, '--seq-length', '4', '--device', 'cpu', *extra]


@pytest.fixture(scope='module')
def carried(tiny_synthetic, trained_checkpoint, tmp_path_factory) -> str:
    output = str(tmp_path_factory.mktemp('carried'))
    result = run_script('validate.py', *validate_args(tiny_synthetic, trained_checkpoint, output,
                                                      '--save-images', '--save-states', '--state-module', '3'))
    assert result.returncode == 0, result.stderr
    assert 'all frames' in result.stdout
    return output


@pytest.mark.slow
def test_metrics_files(carried):
    with open(os.path.join(carried, 'metrics.json')) as file:
        summary = json.load(file)
    assert {'settings', 'frames', 'mean', 'clips'} <= set(summary)
    assert summary['frames'] == 24 and sorted(summary['clips']) == ['0000', '0001']
    assert set(summary['mean']) == {'MAD', 'MSE', 'Grad', 'Conn', 'dtSSD', 'fgr_MSE'}
    assert all(value > 0 for value in summary['mean'].values())
    frames = summary['clips']['0000']['frames']
    assert [frame['frame'] for frame in frames] == list(range(12))
    assert frames[0]['dtSSD'] is None and frames[1]['dtSSD'] is not None  # no previous frame at a clip's start
    with open(os.path.join(carried, 'metrics.csv')) as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 24 and float(rows[5]['MAD']) == pytest.approx(frames[5]['MAD'])
    mad = sum(frame['MAD'] for clip in summary['clips'].values() for frame in clip['frames']) / 24
    assert summary['mean']['MAD'] == pytest.approx(mad)


@pytest.mark.slow
@pytest.mark.skipif(low_precision_dtype(torch.device('cpu')) is None, reason='a CPU without bfloat16 instructions')
def test_bf16_metrics_are_close_to_fp32(tiny_synthetic, trained_checkpoint, carried, tmp_path):
    result = run_script('validate.py', *validate_args(tiny_synthetic, trained_checkpoint, str(tmp_path),
                                                      '--precision', 'bf16'))
    assert result.returncode == 0, result.stderr
    with open(os.path.join(carried, 'metrics.json')) as fp32, open(tmp_path / 'metrics.json') as bf16:
        fp32, bf16 = json.load(fp32)['mean'], json.load(bf16)['mean']
    assert fp32 != bf16  # autocast did run
    for name in ('MAD', 'MSE', 'Grad', 'Conn', 'dtSSD'):
        assert bf16[name] == pytest.approx(fp32[name], rel=0.05)


@pytest.mark.slow
def test_saved_images_and_states(carried):
    clip = os.path.join(carried, '0001')
    for name in ('pred_pha', 'true_pha', 'pred_err', 'true_src', 'pred_com'):
        assert sorted(os.listdir(os.path.join(clip, name))) == [f'{frame:06d}.png' for frame in range(12)]
    states = [name for name in os.listdir(clip) if name.startswith('state_')]
    assert len(states) == 2 * 48  # every channel of h and c of the third ConvLSTM (48 hidden channels)
    assert len(os.listdir(os.path.join(clip, 'state_h_0'))) == 12


@pytest.mark.slow
def test_resetting_the_state_changes_the_numbers(tiny_synthetic, trained_checkpoint, carried, tmp_path):
    result = run_script('validate.py', *validate_args(tiny_synthetic, trained_checkpoint, str(tmp_path),
                                                      '--reset-state-every', '1'))
    assert result.returncode == 0, result.stderr
    with open(os.path.join(carried, 'metrics.json')) as file:
        carried_frames = json.load(file)['clips']['0000']['frames']
    with open(tmp_path / 'metrics.json') as file:
        reset_frames = json.load(file)['clips']['0000']['frames']
    assert reset_frames[0]['MAD'] == pytest.approx(carried_frames[0]['MAD'], rel=1e-6)  # both start from zeros
    assert reset_frames[5]['MAD'] != pytest.approx(carried_frames[5]['MAD'], rel=1e-6)


@pytest.mark.slow
def test_output_path_that_is_a_file(tiny_synthetic, trained_checkpoint, tmp_path):
    path = tmp_path / 'taken'
    path.write_text('')
    result = run_script('validate.py', *validate_args(tiny_synthetic, trained_checkpoint, str(path)))
    assert result.returncode != 0 and f'--output-path {path} is a file' in result.stderr


@pytest.mark.slow
def test_missing_checkpoint_and_background_id(tiny_synthetic, trained_checkpoint, tmp_path):
    result = run_script('validate.py', *validate_args(tiny_synthetic, str(tmp_path / 'nope.pth'), str(tmp_path / 'out')))
    assert result.returncode != 0 and 'nope.pth does not exist' in result.stderr
    result = run_script('validate.py', *validate_args(tiny_synthetic, trained_checkpoint, str(tmp_path / 'out'),
                                                      '--background-image-id', '7'))
    assert result.returncode != 0 and 'background_image_id 7' in result.stderr
    assert not (tmp_path / 'out').exists(), 'a failed run leaves no output folder'


@pytest.mark.slow
def test_bad_sequence_flags(tiny_synthetic, trained_checkpoint, tmp_path):
    args = validate_args(tiny_synthetic, trained_checkpoint, str(tmp_path / 'out'), '--reset-state-every', '-1')
    result = run_script('validate.py', *args)
    assert result.returncode != 0 and '--reset-state-every and --num-workers at least 0' in result.stderr


@pytest.mark.slow
def test_synthetic_name_with_a_folder_or_background_is_refused(tiny_synthetic, trained_checkpoint, tmp_path):
    """The synthetic names are drawn in memory; a dataset written to disk is read as videomatte240k."""
    for flags in (['--videomatte-root', tiny_synthetic], ['--background-image-id', '0']):
        result = run_script('validate.py', '--dataset-name', 'synthetic', '--model-backbone', 'mobilenetv2',
                            '--model-checkpoint', trained_checkpoint, '--output-path', str(tmp_path / 'out'),
                            '--device', 'cpu', *flags)
        assert result.returncode != 0 and 'Traceback' not in result.stderr
        assert 'drawn in memory' in result.stderr and '--dataset-name videomatte240k' in result.stderr
    assert not (tmp_path / 'out').exists()


@pytest.mark.slow
def test_the_model_settings_come_from_the_checkpoint(tiny_synthetic, trained_checkpoint, tmp_path):
    args = validate_args(tiny_synthetic, trained_checkpoint, str(tmp_path / 'out'))
    del args[args.index('--model-backbone'):args.index('--model-backbone') + 2]
    result = run_script('validate.py', *args)
    assert result.returncode == 0, result.stderr
    with open(tmp_path / 'out' / 'metrics.json') as file:
        settings = json.load(file)['settings']
    assert settings['model_backbone'] == 'mobilenetv2' and settings['without_convlstm'] is False

    result = run_script('validate.py', *args, '--without-convlstm')  # a model trained with its ConvLSTMs
    assert result.returncode != 0 and 'Traceback' not in result.stderr
    assert (f'--without-convlstm on contradicts checkpoint {trained_checkpoint}, trained with --without-convlstm '
            f'off') in result.stderr


def earlier_run(folder) -> dict:
    """Write an earlier run's metrics files into `folder`; returns {name: content}."""
    os.makedirs(folder, exist_ok=True)
    earlier = {'metrics.json': '{"frames": 1}', 'metrics.csv': 'clip,frame,MAD\n0000,0,1.0\n'}
    for name, text in earlier.items():
        with open(os.path.join(folder, name), 'w') as file:
            file.write(text)
    return earlier


def contents(folder) -> dict:
    return {name: open(os.path.join(folder, name)).read() for name in validate.METRICS_FILES
            if os.path.exists(os.path.join(folder, name))}


@pytest.mark.slow
def test_a_checkpoint_with_non_finite_outputs_is_one_line(tiny_synthetic, nan_checkpoint, tmp_path):
    earlier = earlier_run(tmp_path)
    result = run_script('validate.py', *validate_args(tiny_synthetic, nan_checkpoint, str(tmp_path)))
    assert result.returncode == 1 and 'Traceback' not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == f'error: checkpoint {nan_checkpoint} outputs non-finite values ' \
                                                     f'(NaN or inf): retrain it with lower learning rates or use an ' \
                                                     f'earlier checkpoint'
    assert contents(tmp_path) == earlier and sorted(os.listdir(tmp_path)) == sorted(earlier)


def test_a_full_disk_leaves_the_earlier_metrics_whole(tmp_path, monkeypatch):
    earlier = earlier_run(tmp_path)
    real_fsync, synced = os.fsync, []

    def fsync(descriptor: int) -> None:
        synced.append(descriptor)
        if len(synced) == 2:  # metrics.json is written, metrics.csv finds the disk full
            raise OSError(errno.ENOSPC, 'No space left on device')
        real_fsync(descriptor)

    monkeypatch.setattr(os, 'fsync', fsync)
    args = validate.parser.parse_args(validate_args('data', 'model.pth', str(tmp_path)))
    rows = [{'clip': '0000', 'frame': 0, 'MAD': 2.0}]
    with pytest.raises(OutputFolderError, match=f'^{tmp_path}: the disk is full, so metrics.csv cannot be written; '
                                                f'free some space there or choose another folder$'):
        validate.write_metrics(args, rows, frames_per_second=1.0)
    assert contents(tmp_path) == earlier and sorted(os.listdir(tmp_path)) == sorted(earlier)
    monkeypatch.setattr(os, 'fsync', real_fsync)
    validate.write_metrics(args, rows, frames_per_second=1.0)
    assert json.loads(contents(tmp_path)['metrics.json'])['mean'] == {'MAD': 2.0}
    assert (tmp_path / 'metrics.csv').read_bytes() == b'clip,frame,MAD\r\n0000,0,2.0\r\n'  # as csv writes them


def test_saving_images_removes_the_earlier_runs_metrics_first(tiny_synthetic, random_checkpoint, tmp_path,
                                                              monkeypatch):
    earlier_run(tmp_path)
    real_save_images = validate.save_images

    def killed_after_one_frame(*args) -> None:
        real_save_images(*args)
        raise KeyboardInterrupt  # as a run stopped while saving its images

    monkeypatch.setattr(validate, 'save_images', killed_after_one_frame)
    args = validate.parser.parse_args(validate_args(tiny_synthetic, random_checkpoint, str(tmp_path), '--save-images'))
    with pytest.raises(KeyboardInterrupt):
        validate.validate(args)
    assert os.listdir(tmp_path / '0000' / 'pred_pha') == ['000000.png']
    assert contents(tmp_path) == {}, "this run's images never sit beside the earlier run's metrics"


def synthetic_args(checkpoint, output, *extra: str) -> list[str]:
    """validate.py flags for one synthetic clip at 32x32."""
    return ['--dataset-name', 'synthetic', '--synthetic-clips', '1', '--resolution', '32', '--model-checkpoint',
            str(checkpoint), '--output-path', str(output), '--seq-length', '8', '--device', 'cpu', *extra]


def validate_error(args: list[str]) -> str:
    """The one-line message validate.py exits with."""
    with pytest.raises(SystemExit) as exit_info:
        validate.main(args)
    message = exit_info.value.code
    assert isinstance(message, str) and message.startswith('error: ') and '\n' not in message
    return message


def test_synthetic_clips_beyond_the_split_or_for_data_on_disk(random_checkpoint, tiny_synthetic, tmp_path):
    args = synthetic_args(random_checkpoint, tmp_path / 'out', '--split', 'test')
    args[args.index('--synthetic-clips') + 1] = '33'
    assert validate_error(args) == 'error: --synthetic-clips 33: the test split of synthetic has 32 clips: use 1 to 32'
    message = validate_error(validate_args(tiny_synthetic, random_checkpoint, str(tmp_path / 'out'),
                                           '--synthetic-clips', '5'))
    assert message == 'error: --synthetic-clips 5 is for the synthetic datasets, and videomatte240k is read from ' \
                      'disk with all its clips: leave it out'
    assert os.listdir(tmp_path) == []


def earlier_images(folder) -> dict:
    """Images and states of an earlier validation run in `folder`, as a run killed after clip 0001 leaves them."""
    written = {}
    for path in ('0001/pred_pha/000000.png', '0001/true_src/000000.png', '0003/state_h_0/000000.png'):
        os.makedirs(os.path.dirname(os.path.join(folder, path)), exist_ok=True)
        with open(os.path.join(folder, path), 'wb') as file:
            file.write(path.encode())
        written[path] = path.encode()
    return written


def every_file(folder) -> dict:
    return {os.path.relpath(os.path.join(root, name), folder): open(os.path.join(root, name), 'rb').read()
            for root, _, names in os.walk(folder) for name in names}


@pytest.mark.parametrize('saving', [['--save-images'], ['--save-states'], []])
def test_a_folder_with_an_earlier_runs_images_is_refused(random_checkpoint, tmp_path, saving):
    earlier = earlier_images(tmp_path)
    message = validate_error(synthetic_args(random_checkpoint, tmp_path, *saving))
    assert message == f'error: --output-path {tmp_path} holds the images of an earlier run ({tmp_path / "0001"}, ' \
                      f'{tmp_path / "0003"}), which this run\'s metrics would not describe: choose another ' \
                      f'--output-path, or move those folders away'
    assert every_file(tmp_path) == earlier
    os.makedirs(tmp_path / 'other' / 'notes')  # a folder that holds no images of a run is no obstacle
    validate.main(synthetic_args(random_checkpoint, tmp_path / 'other', *saving))
    assert os.path.exists(tmp_path / 'other' / 'metrics.json')


def test_an_output_never_overwrites_an_input(random_checkpoint, tiny_synthetic, tmp_path):
    checkpoint = tmp_path / 'metrics.json'
    checkpoint.write_bytes(open(random_checkpoint, 'rb').read())
    message = validate_error(synthetic_args(checkpoint, tmp_path))
    assert message == f'error: --model-checkpoint {checkpoint} is also an output of this run ({checkpoint}), which ' \
                      f'would overwrite it: choose another --output-path'
    clip_checkpoint = tmp_path / 'out' / '0000' / 'model.pth'
    os.makedirs(clip_checkpoint.parent)
    clip_checkpoint.write_bytes(checkpoint.read_bytes())
    message = validate_error(synthetic_args(clip_checkpoint, tmp_path / 'out', '--save-images'))
    assert message.startswith(f'error: --model-checkpoint {clip_checkpoint} lies inside {tmp_path / "out" / "0000"}')
    data = tmp_path / 'data'
    shutil.copytree(tiny_synthetic, data)
    before = every_file(data)
    for output in (data / 'valid' / 'fgr', data / 'backgrounds' / 'valid' / 'out'):
        message = validate_error(validate_args(str(data), random_checkpoint, str(output), '--save-images'))
        assert message.startswith(f'error: --output-path {output} lies in ') and 'which holds the data this run reads'
    assert every_file(data) == before


def test_partial_and_non_finite_weights_are_refused(random_checkpoint, random_refine_checkpoint, tmp_path):
    state_dict = torch.load(random_refine_checkpoint)
    partial = {name: tensor for name, tensor in state_dict.items()
               if not name.startswith('refiner.') or name == 'refiner.conv4.bias'}
    torch.save(partial, tmp_path / 'partial.pth')
    message = validate_error(synthetic_args(tmp_path / 'partial.pth', tmp_path / 'out', '--model-refine'))
    assert message.startswith(f'error: checkpoint {tmp_path / "partial.pth"} does not fit MattingRefine: it lacks 19')
    state_dict = torch.load(random_checkpoint)
    state_dict['decoder.conv4.weight'][10] = math.nan  # a hidden channel: MattingBase's outputs never read it
    torch.save(state_dict, tmp_path / 'nan.pth')
    message = validate_error(synthetic_args(tmp_path / 'nan.pth', tmp_path / 'out'))
    assert message == f'error: checkpoint {tmp_path / "nan.pth"} holds non-finite values (NaN or inf) in ' \
                      f'decoder.conv4.weight: retrain it with lower learning rates or use an earlier checkpoint'
    assert sorted(os.listdir(tmp_path)) == ['nan.pth', 'partial.pth']


@pytest.mark.parametrize('signum, status', [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_exits_with_its_status_and_keeps_the_earlier_metrics(random_checkpoint, tmp_path, monkeypatch,
                                                                      capsys, signum, status):
    earlier = earlier_run(tmp_path)
    signal_when_called(monkeypatch, validate, 'matte_chunk', signum)
    with pytest.raises(SystemExit) as exit_info:
        validate.main(synthetic_args(random_checkpoint, tmp_path))
    assert exit_info.value.code == status
    assert capsys.readouterr().err.strip().splitlines()[-1] == 'interrupted: no metrics written'
    assert contents(tmp_path) == earlier and sorted(os.listdir(tmp_path)) == sorted(earlier)


@pytest.mark.slow
def test_sigterm_to_the_process_group_with_workers_is_one_line(random_checkpoint, tmp_path):
    """A kill of the whole group reaches the DataLoader workers too: the main process alone decides how to stop."""
    process = subprocess.Popen(
        [sys.executable, 'validate.py', *synthetic_args(random_checkpoint, tmp_path, '--num-workers', '2',
                                                        '--synthetic-clips', '32', '--resolution', '64')],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        env={**os.environ, 'PYTHONUNBUFFERED': '1'})
    try:
        stderr = b''
        while b'validation:' not in stderr:  # the progress bar: the workers have started
            select.select([process.stderr], [], [], 60)
            chunk = os.read(process.stderr.fileno(), 4096)
            assert chunk, stderr.decode()
            stderr += chunk
        time.sleep(1)
        os.killpg(process.pid, signal.SIGTERM)
        stderr += process.communicate(timeout=120)[1]
    finally:
        process.kill()
    assert process.returncode == 143 and b'Traceback' not in stderr, stderr.decode()
    assert stderr.decode().strip().splitlines()[-1] == 'interrupted: no metrics written'
    assert os.listdir(tmp_path) == []
