"""train.py: checkpoints and logs, learning, exact resume after a kill, torchrun with gloo, bad input."""
import errno
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from checkpoint import newest_checkpoint, remove_old_checkpoints
from dataset import make_dataset
from loss import matting_loss
from model import MattingBase
import train
from script_runner import REPO, run_script, train_args
from train import outputs_finite


def logged(log_dir: str, tag: str = 'train/loss_total') -> dict[int, float]:
    """step -> value of a scalar in every TensorBoard event file of log_dir."""
    values = {}
    for name in sorted(os.listdir(log_dir)):
        events = EventAccumulator(os.path.join(log_dir, name))
        events.Reload()
        if tag in events.Tags()['scalars']:
            values.update({event.step: event.value for event in events.Scalars(tag)})
    return values


@pytest.mark.slow
def test_checkpoint_holds_everything_to_continue(trained_checkpoint):
    checkpoint = torch.load(trained_checkpoint, map_location='cpu', weights_only=False)
    assert {'model', 'optimizer', 'scaler', 'epoch', 'step', 'batch_in_epoch', 'args', 'random_states'} <= set(checkpoint)
    assert checkpoint['step'] == 4 and checkpoint['args']['model_backbone'] == 'mobilenetv2'
    assert len(checkpoint['optimizer']['param_groups']) == 3
    log_dir = os.path.join(os.path.dirname(os.path.dirname(trained_checkpoint)), 'log')
    losses = logged(log_dir)
    assert sorted(losses) == [1, 2, 3, 4]
    assert {'train/loss_pha_l1', 'train/loss_pha_sobel', 'train/loss_fgr_l1', 'train/loss_err_l2',
            'train/lr_backbone'} <= set(EventAccumulator(log_dir).Reload().Tags()['scalars'])


@pytest.mark.slow  # 25 training steps
def test_loss_decreases_when_overfitting_one_batch(tiny_synthetic):
    torch.manual_seed(0)
    dataset = make_dataset('videomatte240k', 'train', 3, 64, videomatte_root=tiny_synthetic,
                           backgrounds_root=os.path.join(tiny_synthetic, 'backgrounds'))
    fgr, pha, bgr = (x.unsqueeze(0) for x in dataset[0])
    src = fgr * pha + bgr * (1 - pha)
    model = MattingBase('mobilenetv2').train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4)
    losses = []
    for _ in range(25):
        pred_pha, pred_fgr, pred_err, _, _ = model(src)
        loss = matting_loss(pred_pha, pred_fgr, pred_err, pha, fgr)['total']
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]


def test_matting_loss_is_zero_for_a_perfect_prediction():
    pha = torch.rand(1, 2, 1, 16, 16)
    fgr = torch.rand(1, 2, 3, 16, 16)
    losses = matting_loss(pha, fgr, torch.zeros_like(pha), pha, fgr)
    assert losses['total'].item() == 0
    worse = matting_loss(pha.flip(-1), fgr, torch.zeros_like(pha), pha, fgr)
    assert worse['pha_l1'] > 0 and worse['pha_sobel'] > 0 and worse['err_l2'] > 0


def test_l2_term_rewards_a_weak_cue_that_l1_ignores():
    """A pixel that is the person with probability p: L1's best alpha is 0 for any p < 0.5, so it cannot tell p 0.3
    from 0.4; with the L2 term the best alpha, max(0, 2p - 0.5), follows p."""
    def best_alpha(p: float, pha_loss: str) -> float:
        candidates = torch.linspace(0, 1, 101)
        expected = []
        for alpha in candidates:
            pred = alpha.expand(1, 2, 1, 4, 4)
            truths = [torch.ones_like(pred), torch.zeros_like(pred)]
            losses = [matting_loss(pred, pred.expand(1, 2, 3, 4, 4), torch.zeros_like(pred), true,
                                   true.expand(1, 2, 3, 4, 4), pha_loss) for true in truths]
            expected.append(p * losses[0]['pha_l1'] + (1 - p) * losses[1]['pha_l1']
                            + p * losses[0].get('pha_l2', 0) + (1 - p) * losses[1].get('pha_l2', 0))
        return candidates[int(torch.stack(expected).argmin())].item()

    assert best_alpha(0.3, 'l1') == best_alpha(0.4, 'l1') == 0
    assert best_alpha(0.3, 'l1+l2') == pytest.approx(0.1) and best_alpha(0.4, 'l1+l2') == pytest.approx(0.3)
    with pytest.raises(ValueError, match='pha_loss'):
        matting_loss(*[torch.zeros(1, 1, 1, 2, 2)] * 5, pha_loss='l2')


@pytest.mark.slow
def test_resume_after_a_kill_continues_exactly(tiny_synthetic, tmp_path):
    straight = tmp_path / 'straight'
    result = run_script('train.py', *train_args(tiny_synthetic, str(straight), '--max-steps', '9',
                                                '--checkpoint-interval', '4', '--log-valid-interval', '0'))
    assert result.returncode == 0, result.stderr

    killed = tmp_path / 'killed'
    args = train_args(tiny_synthetic, str(killed), '--checkpoint-interval', '4', '--log-valid-interval', '0')
    process = subprocess.Popen([sys.executable, 'train.py', *args, '--max-steps', '1000'], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = killed / 'checkpoint' / 'epoch-0-iter-4.pth'
    deadline = time.time() + 240
    while not first.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    # The killed run's .lock stays behind; the resumed run takes it over.
    assert sorted(os.listdir(killed / 'checkpoint')) == ['.lock', 'epoch-0-iter-4.pth']

    resumed_log = tmp_path / 'resumed-log'
    args = train_args(tiny_synthetic, str(killed), '--checkpoint-interval', '4', '--log-valid-interval', '0')
    args[args.index('--log-dir') + 1] = str(resumed_log)
    result = run_script('train.py', *args, '--resume', '--max-steps', '9')
    assert result.returncode == 0, result.stderr
    assert 'Continuing from' in result.stdout
    expected, resumed = logged(str(straight / 'log')), logged(str(resumed_log))
    assert sorted(resumed) == [5, 6, 7, 8, 9]  # crosses the end of epoch 0 (6 steps per epoch)
    assert [resumed[step] for step in resumed] == [expected[step] for step in resumed]


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_exits_130(tiny_synthetic, tmp_path):
    args = train_args(tiny_synthetic, str(tmp_path), '--checkpoint-interval', '1000', '--log-valid-interval', '0')
    process = subprocess.Popen([sys.executable, 'train.py', *args, '--max-steps', '1000'], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log_dir = tmp_path / 'log'
    deadline = time.time() + 240
    while not (log_dir.exists() and logged(str(log_dir))) and time.time() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr  # as a shell reports a run stopped by SIGINT: not finished
    saved = os.listdir(tmp_path / 'checkpoint')
    assert len(saved) == 1 and 'interrupted: saved' in stderr + stdout


@pytest.mark.slow
def test_sigterm_to_the_process_group_with_workers_saves_and_exits_143(tiny_synthetic, tmp_path):
    args = train_args(tiny_synthetic, str(tmp_path), '--checkpoint-interval', '1000', '--log-valid-interval', '0',
                      '--num-workers', '1')
    process = subprocess.Popen([sys.executable, 'train.py', *args, '--max-steps', '1000'], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    log_dir = tmp_path / 'log'
    deadline = time.time() + 240
    while not (log_dir.exists() and logged(str(log_dir))) and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGTERM)  # the main process and its DataLoader worker alike
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    assert 'Traceback' not in stderr and 'interrupted: saved' in stderr + stdout
    assert len(os.listdir(tmp_path / 'checkpoint')) == 1


@pytest.mark.slow
def test_a_bad_frame_mid_training_keeps_the_steps_done(tiny_synthetic, tmp_path):
    data = tmp_path / 'data'
    shutil.copytree(tiny_synthetic, data)
    for frame in (data / 'train' / 'fgr' / '0001').iterdir():  # with seed 0, first drawn at step 2
        frame.write_bytes(b'not a JPEG')
    args = train_args(str(data), str(tmp_path), '--max-steps', '12', '--log-valid-interval', '0')
    result = run_script('train.py', *args)
    assert result.returncode == 1 and 'Traceback' not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f'error: {data / "train" / "fgr" / "0001"}')
    assert 'stopped by a data error: saved' in result.stderr + result.stdout
    assert os.listdir(tmp_path / 'checkpoint') == ['epoch-0-iter-1.pth']


@pytest.mark.slow
def test_a_second_run_in_the_same_folder_is_refused(trained_checkpoint, tiny_synthetic):
    out = os.path.dirname(os.path.dirname(trained_checkpoint))
    before = sorted(os.listdir(os.path.join(out, 'checkpoint')))
    result = run_script('train.py', *train_args(tiny_synthetic, out, '--max-steps', '2', '--seed', '7'))
    assert result.returncode == 1 and 'Traceback' not in result.stderr
    assert 'holds checkpoints of an earlier run (the newest epoch-0-iter-4.pth): pass --resume' in result.stderr
    assert sorted(os.listdir(os.path.join(out, 'checkpoint'))) == before


@pytest.mark.slow
def test_resume_keeps_the_settings_of_the_checkpoint(tiny_synthetic, tmp_path):
    result = run_script('train.py', *train_args(tiny_synthetic, str(tmp_path), '--max-steps', '1',
                                                '--log-valid-interval', '0', '--without-convlstm', '--seed', '3'))
    assert result.returncode == 0, result.stderr
    result = run_script('train.py', *train_args(tiny_synthetic, str(tmp_path), '--max-steps', '2',
                                                '--log-valid-interval', '0', '--resume'))
    assert result.returncode == 0, result.stderr
    settings = torch.load(tmp_path / 'checkpoint' / 'epoch-0-iter-2.pth', map_location='cpu',
                          weights_only=False)['args']
    assert settings['without_convlstm'] is True and settings['seed'] == 3

    for flags, message in ((['--resolution', '32'], '--resolution 32 contradicts checkpoint'),
                           (['--lr-decoder', '0.1'], '--lr-decoder 0.1 contradicts checkpoint')):
        result = run_script('train.py', *train_args(tiny_synthetic, str(tmp_path), '--max-steps', '3',
                                                    '--log-valid-interval', '0', '--resume', *flags))
        assert result.returncode == 1 and message in result.stderr and 'Traceback' not in result.stderr
        assert 'trained with ' + ' '.join(flags[:1]) in result.stderr
    assert sorted(os.listdir(tmp_path / 'checkpoint')) == ['epoch-0-iter-1.pth', 'epoch-0-iter-2.pth']


@pytest.mark.slow
def test_a_running_process_holds_the_checkpoint_folder(tiny_synthetic, tmp_path):
    folder = tmp_path / 'checkpoint'
    folder.mkdir()
    (folder / '.lock').write_text(f'{os.getpid()} {socket.gethostname()}\n')  # this live process
    result = run_script('train.py', *train_args(tiny_synthetic, str(tmp_path), '--max-steps', '1'))
    assert result.returncode == 1 and 'Traceback' not in result.stderr
    assert f'--checkpoint-dir {folder} is in use by process {os.getpid()} on {socket.gethostname()}' in result.stderr

    ended = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'], capture_output=True, text=True)
    (folder / '.lock').write_text(f'{ended.stdout.strip()} {socket.gethostname()}\n')  # a killed run's lock
    result = run_script('train.py', *train_args(tiny_synthetic, str(tmp_path), '--max-steps', '1',
                                                '--log-valid-interval', '0'))
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(folder)) == ['epoch-0-iter-1.pth'], 'the stale lock was taken over, then removed'


def test_finite_weights_with_non_finite_outputs_are_caught():
    model = MattingBase('mobilenetv2')
    assert outputs_finite(model, torch.device('cpu'))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(1e6)
    assert all(torch.isfinite(parameter).all() for parameter in model.parameters())
    assert not outputs_finite(model, torch.device('cpu'))
    assert model.training, 'left in the mode it was in'


@pytest.mark.slow
def test_non_finite_loss_stops_without_a_checkpoint(tiny_synthetic, tmp_path):
    result = run_script('train.py', *train_args(tiny_synthetic, str(tmp_path), '--max-steps', '6',
                                                '--checkpoint-interval', '1', '--log-valid-interval', '0',
                                                '--lr-decoder', '1e30', '--lr-aspp', '1e30', '--lr-backbone', '1e30'))
    assert result.returncode != 0
    assert 'error:' in result.stderr and 'at step' in result.stderr
    for name in os.listdir(tmp_path / 'checkpoint') if (tmp_path / 'checkpoint').exists() else []:
        weights = torch.load(tmp_path / 'checkpoint' / name, map_location='cpu', weights_only=False)['model']
        assert all(torch.isfinite(tensor).all() for tensor in weights.values() if tensor.is_floating_point())


@pytest.mark.slow
def test_torchrun_with_two_gloo_processes_agrees_on_weights(tiny_synthetic, tmp_path):
    args = train_args(tiny_synthetic, str(tmp_path), '--max-steps', '2', '--checkpoint-interval', '2',
                      '--log-valid-interval', '0', '--batch-size', '1')
    result = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
                             'train.py', *args], cwd=REPO, capture_output=True, text=True, timeout=300,
                            env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'replicas agree' in result.stdout
    assert os.listdir(tmp_path / 'checkpoint') == ['epoch-0-iter-2.pth']


@pytest.mark.slow
@pytest.mark.parametrize('extra, message', [
    (['--videomatte-root', '/nonexistent/videomatte'], '/nonexistent/videomatte'),
    (['--backgrounds-root', '/nonexistent/backgrounds'], '/nonexistent/backgrounds'),
])
def test_missing_paths_are_named(tiny_synthetic, tmp_path, extra, message):
    result = run_script('train.py', *train_args(tiny_synthetic, str(tmp_path), '--max-steps', '1', *extra))
    assert result.returncode != 0 and message in result.stderr
    assert 'Traceback' not in result.stderr and result.stderr.strip().splitlines()[-1].startswith('error:')


@pytest.mark.slow
def test_unknown_dataset_name(tiny_synthetic, tmp_path):
    args = train_args(tiny_synthetic, str(tmp_path), '--max-steps', '1')
    args[args.index('--dataset-name') + 1] = 'videomatte999k'
    result = run_script('train.py', *args)
    assert result.returncode != 0 and "videomatte999k" in result.stderr


@pytest.mark.slow
def test_checkpoint_of_another_backbone_names_both(tiny_synthetic, tmp_path):
    path = tmp_path / 'resnet50.pth'
    torch.save(MattingBase('resnet50').state_dict(), path)
    result = run_script('train.py', *train_args(tiny_synthetic, str(tmp_path), '--max-steps', '1',
                                                '--model-last-checkpoint', str(path)))
    assert result.returncode != 0
    assert 'resnet50' in result.stderr and 'mobilenetv2' in result.stderr and 'Traceback' not in result.stderr


@pytest.mark.slow
def test_truncated_checkpoint(tiny_synthetic, tmp_path, trained_checkpoint):
    path = tmp_path / 'truncated.pth'
    path.write_bytes(open(trained_checkpoint, 'rb').read()[:5000])
    result = run_script('train.py', *train_args(tiny_synthetic, str(tmp_path), '--max-steps', '1',
                                                '--model-last-checkpoint', str(path)))
    assert result.returncode != 0 and 'truncated' in result.stderr and str(path) in result.stderr


@pytest.mark.slow
def test_batch_larger_than_the_dataset(tiny_synthetic, tmp_path):
    result = run_script('train.py', *train_args(tiny_synthetic, str(tmp_path), '--max-steps', '1',
                                                '--batch-size', '500'))
    assert result.returncode != 0 and 'fewer than --batch-size 500' in result.stderr


@pytest.mark.slow
def test_keep_checkpoints_leaves_the_newest(tiny_synthetic, tmp_path, trained_checkpoint):
    result = run_script('train.py', *train_args(tiny_synthetic, str(tmp_path), '--max-steps', '3',
                                                '--checkpoint-interval', '1', '--keep-checkpoints', '2',
                                                '--log-valid-interval', '0',
                                                '--model-pretrain-initialization', trained_checkpoint))
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(tmp_path / 'checkpoint')) == ['epoch-0-iter-2.pth', 'epoch-0-iter-3.pth']
    assert 'Loaded 368/368 tensors' in result.stdout  # MobileNetV2's, from --model-pretrain-initialization


@pytest.mark.slow
@pytest.mark.parametrize('flags, named', [
    (['--batch-size', '1', '--seq-length', '1'], '--batch-size x --seq-length at least 2'),
    (['--batch-size', '0'], '--batch-size and --seq-length must be at least 1'),
    (['--num-workers', '-1'], '--num-workers, --keep-checkpoints and --log-valid-interval'),
    (['--checkpoint-interval', '0'], '--checkpoint-interval must be at least 1'),
])
def test_counts_and_intervals_out_of_range(tiny_synthetic, tmp_path, flags, named):
    result = run_script('train.py', *train_args(tiny_synthetic, str(tmp_path), '--max-steps', '1', *flags))
    assert result.returncode != 0 and named in result.stderr and 'Traceback' not in result.stderr


@pytest.mark.slow
def test_unwritable_checkpoint_folder_fails_before_training(tiny_synthetic, tmp_path):
    blocker = tmp_path / 'a_file'
    blocker.write_text('')
    result = run_script('train.py', *train_args(tiny_synthetic, str(tmp_path), '--max-steps', '1',
                                                '--checkpoint-dir', str(blocker / 'checkpoint')))
    assert result.returncode != 0 and 'Traceback' not in result.stderr
    assert f'--checkpoint-dir {blocker / "checkpoint"}: {blocker} is a file' in result.stderr
    assert 'epoch 0' not in result.stderr, 'no training step ran'


def test_newest_checkpoint_is_ordered_by_epoch_then_step(tmp_path):
    for name in ('epoch-0-iter-30.pth', 'epoch-1-iter-2.pth', 'epoch-1-iter-5.pth', 'notes.pth'):
        (tmp_path / name).write_bytes(b'')
    assert newest_checkpoint(str(tmp_path)) == str(tmp_path / 'epoch-1-iter-5.pth')
    remove_old_checkpoints(str(tmp_path), 2)
    assert sorted(os.listdir(tmp_path)) == ['epoch-1-iter-2.pth', 'epoch-1-iter-5.pth', 'notes.pth']


@pytest.mark.slow
def test_steps_count_on_from_epoch_start(tiny_synthetic, tmp_path):
    per_epoch = len(make_dataset('videomatte240k', 'train', 3, 64, videomatte_root=tiny_synthetic,
                                 backgrounds_root=os.path.join(tiny_synthetic, 'backgrounds'))) // 2
    result = run_script('train.py', *train_args(tiny_synthetic, str(tmp_path), '--epoch-start', '1', '--max-steps',
                                                str(per_epoch + 1), '--log-valid-interval', '0'))
    assert result.returncode == 0, result.stderr
    assert os.listdir(tmp_path / 'checkpoint') == [f'epoch-1-iter-{per_epoch + 1}.pth']
    result = run_script('train.py', *train_args(tiny_synthetic, str(tmp_path / 'short'), '--epoch-start', '1',
                                                '--max-steps', str(per_epoch)))
    assert result.returncode != 0 and 'Traceback' not in result.stderr
    assert f'--epoch-start 1 starts at step {per_epoch} ({per_epoch} per epoch): give a larger --max-steps' \
        in result.stderr


@pytest.mark.slow
def test_keep_checkpoints_refuses_a_folder_of_another_run(tiny_synthetic, tmp_path):
    (tmp_path / 'checkpoint').mkdir()
    (tmp_path / 'checkpoint' / 'epoch-9-iter-900.pth').write_bytes(b'')
    result = run_script('train.py', *train_args(tiny_synthetic, str(tmp_path), '--max-steps', '1',
                                                '--keep-checkpoints', '1'))
    assert result.returncode != 0 and 'holds checkpoints of an earlier run' in result.stderr
    assert os.listdir(tmp_path / 'checkpoint') == ['epoch-9-iter-900.pth']


@pytest.mark.slow
def test_last_checkpoint_without_convlstm_tensors_loads_what_matches(tiny_synthetic, tmp_path):
    """--model-last-checkpoint with a BackgroundMattingV2-like state dict (no ConvLSTM), as the original allowed."""
    own = MattingBase('mobilenetv2').state_dict()
    path = tmp_path / 'no_convlstm.pth'
    torch.save({name: tensor for name, tensor in own.items() if 'convlstm' not in name}, path)
    result = run_script('train.py', *train_args(tiny_synthetic, str(tmp_path), '--max-steps', '1',
                                                '--log-valid-interval', '0', '--model-last-checkpoint', str(path)))
    assert result.returncode == 0, result.stderr
    matched = sum('convlstm' not in name for name in own)
    assert f'Loaded {matched}/{len(own)} tensors' in result.stdout and matched < len(own)


@pytest.mark.slow
def test_last_checkpoint_without_the_whole_encoder_is_refused(tiny_synthetic, tmp_path):
    own = MattingBase('mobilenetv2').state_dict()
    path = tmp_path / 'decoder_only.pth'
    torch.save({name: tensor for name, tensor in own.items() if not name.startswith('aspp.')}, path)
    result = run_script('train.py', *train_args(tiny_synthetic, str(tmp_path), '--max-steps', '1',
                                                '--model-last-checkpoint', str(path)))
    assert result.returncode != 0 and 'Traceback' not in result.stderr
    assert f'--model-last-checkpoint {path} is not a checkpoint of this model' in result.stderr
    assert 'pass it to --model-pretrain-initialization' in result.stderr
    assert not (tmp_path / 'checkpoint').exists(), 'nothing created'


def test_a_full_disk_under_the_tensorboard_log_is_one_line(monkeypatch):
    def full_disk(args):
        raise OSError(errno.ENOSPC, 'No space left on device')
    monkeypatch.setattr(train, 'train', full_disk)
    monkeypatch.setattr(sys, 'argv', ['train.py', '--dataset-name', 'synthetic', '--model-backbone', 'mobilenetv2',
                                      '--model-name', 'full'])
    with pytest.raises(SystemExit) as exit_info:
        train.main()
    message = exit_info.value.code
    assert message.startswith('error: the disk is full ([Errno 28] No space left on device): free some space')
    assert '\n' not in message


@pytest.mark.slow
def test_resume_of_a_finished_run_says_so_and_writes_nothing(trained_checkpoint, tiny_synthetic):
    out = os.path.dirname(os.path.dirname(trained_checkpoint))
    before = {folder: sorted(os.listdir(os.path.join(out, folder))) for folder in ('checkpoint', 'log')}
    result = run_script('train.py', *train_args(tiny_synthetic, out, '--resume', '--max-steps', '4'))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (f'{trained_checkpoint} is at step 4, the --max-steps of this run: it is '
                                     f'finished, nothing to train. Give a larger --max-steps to train further.')
    for flags, message in ((['--max-steps', '3'], f'error: --max-steps 3 is behind checkpoint {trained_checkpoint}, '
                                                  f'at step 4: give a --max-steps above 4 to train further'),
                           (['--max-steps', '9', '--epoch-end', '0'], 'error: --epoch-end 0 is behind checkpoint')):
        result = run_script('train.py', *train_args(tiny_synthetic, out, '--resume', *flags))
        assert result.returncode == 1 and result.stderr.strip().splitlines()[-1].startswith(message)
        assert 'Continuing from' not in result.stdout
    assert {folder: sorted(os.listdir(os.path.join(out, folder))) for folder in before} == before


@pytest.mark.slow
def test_the_dataset_is_a_run_setting(trained_checkpoint, tiny_synthetic):
    out = os.path.dirname(os.path.dirname(trained_checkpoint))
    args = train_args(tiny_synthetic, out, '--resume', '--max-steps', '6')
    args[args.index('--dataset-name') + 1] = 'synthetic-camouflage'
    result = run_script('train.py', *args)
    assert result.returncode == 1 and 'Traceback' not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f'error: --dataset-name synthetic-camouflage contradicts checkpoint {trained_checkpoint}, trained on '
        f'--dataset-name videomatte240k: give --dataset-name videomatte240k to continue that run, or start a new one '
        f'from its weights with --model-pretrain-initialization {trained_checkpoint} and another --model-name')
    assert os.listdir(os.path.dirname(trained_checkpoint)) == ['epoch-0-iter-4.pth']


@pytest.mark.slow
def test_the_refiners_stage_never_writes_into_the_base_runs_folder(trained_checkpoint, tiny_synthetic):
    out = os.path.dirname(os.path.dirname(trained_checkpoint))
    result = run_script('train.py', *train_args(tiny_synthetic, out, '--model-refine', '--resolution', '128',
                                                '--max-steps', '2', '--model-last-checkpoint', trained_checkpoint))
    assert result.returncode == 1 and 'Traceback' not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: --model-last-checkpoint {trained_checkpoint} starts a new run (the refiner's stage, or its weights "
        f"only), which must not write into the folder of the run it comes from: choose another --model-name or "
        f"--checkpoint-dir")
    assert os.listdir(os.path.dirname(trained_checkpoint)) == ['epoch-0-iter-4.pth']


@pytest.mark.slow
def test_the_progress_bar_counts_to_the_steps_of_this_run(tiny_synthetic, tmp_path):
    """6 steps per epoch; the bar ends where --max-steps does, also from a resumed step."""
    result = run_script('train.py', *train_args(tiny_synthetic, str(tmp_path), '--max-steps', '2',
                                                '--log-valid-interval', '0'))
    assert result.returncode == 0, result.stderr
    assert '2/2 [' in result.stderr and '/6 [' not in result.stderr
    result = run_script('train.py', *train_args(tiny_synthetic, str(tmp_path), '--max-steps', '3', '--resume',
                                                '--log-valid-interval', '0'))
    assert result.returncode == 0, result.stderr
    assert '| 2/3 [' in result.stderr and '3/3 [' in result.stderr and '/6 [' not in result.stderr


@pytest.mark.slow
def test_resume_from_a_checkpoint_whose_bytes_changed_names_it(trained_checkpoint, tiny_synthetic, tmp_path):
    folder = tmp_path / 'checkpoint'
    folder.mkdir()
    data = bytearray(open(trained_checkpoint, 'rb').read())
    data[len(data) // 2:len(data) // 2 + 4096] = b'\x7f' * 4096  # inside the tensors: torch.load does not notice
    (folder / 'epoch-0-iter-4.pth').write_bytes(bytes(data))
    result = run_script('train.py', *train_args(tiny_synthetic, str(tmp_path), '--resume', '--max-steps', '6'))
    assert result.returncode == 1 and 'Traceback' not in result.stderr
    assert re.fullmatch(f'error: checkpoint {folder / "epoch-0-iter-4.pth"} is corrupt: the bytes of its record '
                        f'[^ ]+/data/[0-9]+ no longer match the CRC-32 saved with them, so the file changed after it '
                        f'was written; use another checkpoint', result.stderr.strip().splitlines()[-1])


def run_train_with_fault(fault: str, *args: str) -> subprocess.CompletedProcess:
    """train.py with `args`, run as a user would, after the Python code `fault` has patched in a failure that a test
    cannot cause for real (a file system turning read-only, a full disk)."""
    code = f"{fault}\nimport runpy, sys\nsys.argv[0] = 'train.py'\nrunpy.run_path('train.py', run_name='__main__')"
    return subprocess.run([sys.executable, '-c', code, *args], cwd=REPO, capture_output=True, text=True, timeout=300)


def read_only_from_the_first_checkpoint(*folders: str) -> str:
    """Fault code for run_train_with_fault: from the first checkpoint train.py writes on, no file can be made or
    removed in `folders`, as on a file system turned read-only."""
    return f"folders = {[os.path.abspath(folder) for folder in folders]!r}\n" + """
import errno, os, tempfile
real_mkstemp, real_remove, read_only = tempfile.mkstemp, os.remove, []
def refuse_in_folders(path):
    if read_only and (os.path.abspath(path) in folders or os.path.dirname(os.path.abspath(path)) in folders):
        raise OSError(errno.EROFS, 'Read-only file system', path)
def mkstemp(*args, dir=None, prefix='', **kwargs):
    read_only.extend(['from the first checkpoint on'] if prefix.startswith('.epoch-') else [])
    refuse_in_folders(dir or '')
    return real_mkstemp(*args, dir=dir, prefix=prefix, **kwargs)
def remove(path, *args, **kwargs):
    refuse_in_folders(path)
    return real_remove(path, *args, **kwargs)
tempfile.mkstemp, os.remove = mkstemp, remove
"""


@pytest.mark.slow
def test_a_checkpoint_folder_turned_read_only_mid_run_keeps_the_steps_in_the_log_folder(tiny_synthetic, tmp_path):
    folder, log = tmp_path / 'checkpoint', tmp_path / 'log'
    args = train_args(tiny_synthetic, str(tmp_path), '--max-steps', '6', '--checkpoint-interval', '3',
                      '--log-valid-interval', '0')
    result = run_train_with_fault(read_only_from_the_first_checkpoint(folder), *args)
    assert result.returncode == 1 and 'Traceback' not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f'error: cannot write the checkpoint of step 3 into --checkpoint-dir {folder} (Read-only file system): saved '
        f'{log / "epoch-0-iter-3.pth"} instead; move it into {folder} once that is writable, then --resume continues '
        f'from it')
    assert torch.load(log / 'epoch-0-iter-3.pth', map_location='cpu', weights_only=False)['step'] == 3
    assert os.listdir(folder) == ['.lock'], 'the lock stays on the read-only folder; the next run takes it over'

    shutil.rmtree(tmp_path)
    result = run_train_with_fault(read_only_from_the_first_checkpoint(folder, log), *args)
    assert result.returncode == 1 and 'Traceback' not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f'error: cannot write the checkpoint of step 3 into --checkpoint-dir {folder} (Read-only file system), nor '
        f'into --log-dir {log} (Read-only file system): the steps after 0 are lost; make the folder writable (or free '
        f'space), then --resume continues from the newest checkpoint')


@pytest.mark.slow
def test_a_full_log_disk_keeps_the_steps_done_in_the_checkpoint_folder(tiny_synthetic, tmp_path):
    full_log = '''
import errno
from tensorboard.summary.writer import record_writer
real_write, written = record_writer.RecordWriter.write, []
def write(self, data):  # room for the event file's header and a few records, then the disk is full
    written.append(data)
    if len(written) > 4:
        raise OSError(errno.ENOSPC, 'No space left on device')
    return real_write(self, data)
record_writer.RecordWriter.write = write
'''
    result = run_train_with_fault(full_log, *train_args(tiny_synthetic, str(tmp_path), '--max-steps', '6',
                                                        '--checkpoint-interval', '100', '--log-valid-interval', '0'))
    assert result.returncode == 1 and 'Traceback' not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f'error: --log-dir {tmp_path / "log"}: cannot write the TensorBoard log (No space left on device): free some '
        f'space or choose another --log-dir, then --resume continues from the newest checkpoint')
    saved = os.listdir(tmp_path / 'checkpoint')
    assert len(saved) == 1 and f'stopped as the log cannot be written: saved {tmp_path / "checkpoint" / saved[0]}' \
        in result.stdout


@pytest.mark.slow
def test_continuing_an_older_checkpoint_of_its_folder_is_refused(tiny_synthetic, tmp_path):
    result = run_script('train.py', *train_args(tiny_synthetic, str(tmp_path), '--max-steps', '4',
                                                '--checkpoint-interval', '2', '--log-valid-interval', '0'))
    assert result.returncode == 0, result.stderr
    folder = tmp_path / 'checkpoint'
    newest = (folder / 'epoch-0-iter-4.pth').read_bytes()
    older = str(folder / 'epoch-0-iter-2.pth')
    result = run_script('train.py', *train_args(tiny_synthetic, str(tmp_path), '--max-steps', '5',
                                                '--log-valid-interval', '0', '--model-last-checkpoint', older))
    assert result.returncode == 1 and 'Traceback' not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(
        f'error: --model-last-checkpoint {older} is older than the newest checkpoint of its run, epoch-0-iter-4.pth')
    assert sorted(os.listdir(folder)) == ['epoch-0-iter-2.pth', 'epoch-0-iter-4.pth']
    assert (folder / 'epoch-0-iter-4.pth').read_bytes() == newest
    result = run_script('train.py', *train_args(tiny_synthetic, str(tmp_path), '--max-steps', '5',
                                                '--log-valid-interval', '0', '--model-last-checkpoint',
                                                str(folder / 'epoch-0-iter-4.pth')))
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(folder)) == ['epoch-0-iter-2.pth', 'epoch-0-iter-4.pth', 'epoch-0-iter-5.pth']
