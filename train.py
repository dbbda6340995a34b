"""Train MattingBase (with or without ConvLSTM) on VideoMatte240K sequences composited onto backgrounds, or, with
--model-refine, MattingRefine from a MattingBase checkpoint (BackgroundMattingV2's second stage).

One device:        python train.py --dataset-name synthetic --model-backbone mobilenetv2 --model-name demo
Refiner:           python train.py ... --model-refine --model-last-checkpoint checkpoint/demo/epoch-0-iter-800.pth
Several GPUs:      torchrun --nproc_per_node=4 train.py ...   (--batch-size is per process)
Several machines:  torchrun --nnodes=2 --node_rank=R --master_addr=HOST --nproc_per_node=4 train.py ...

Checkpoints go to --checkpoint-dir, TensorBoard logs to --log-dir. Ctrl-C (SIGINT) or SIGTERM saves a checkpoint
and exits with status 130 or 143; --resume continues from the newest checkpoint of --model-name with the same
results as an uninterrupted run. A continued run keeps the settings its checkpoint records (RUN_SETTINGS below):
a flag that contradicts them is an error. One run at a time per --checkpoint-dir: its .lock names the running one.
"""
import argparse
import dataclasses
import errno
import math
import os
import signal
import sys
import threading

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler
from torch.utils.tensorboard import SummaryWriter
from torchvision.utils import make_grid
from tqdm import tqdm

import metrics
from atomic_file import DISK_FULL_ERRNOS, OutputFolderError, check_output_folder
from checkpoint import (FolderLock, is_training_checkpoint, newest_checkpoint, read_checkpoint, recorded_setting,
                        remove_old_checkpoints, save_checkpoint, set_random_states)
from cpu_threads import CPU_THREADS_HELP, FreeCoreThreads, thread_count_flag
from data_path import DATASETS
from dataset import DatasetError, make_dataset
from dataset.loader import TrainLoader
from devices import DeviceError, device_name, low_precision_dtype, make_grad_scaler, open_device, reuse_freed_cpu_memory
from errors import UserError, leave_stop_signals_to_the_main_process
from images import green_screen_composite
from input_paths import same_path
from loss import PHA_LOSSES, matting_loss, refine_loss
from model import BACKBONES, MattingBase, MattingRefine
from model.refiner import REFINE_MODES
from model.utils import imagenet_weights, load_weights, make_model

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument('--dataset-name', required=True, choices=DATASETS,
                    help='dataset to train on (paths in data_path.py); the synthetic ones are drawn in memory')
parser.add_argument('--videomatte-root', help='override the dataset folder of data_path.py')
parser.add_argument('--backgrounds-root', help='override the background image folder of data_path.py')
parser.add_argument('--model-backbone', required=True, choices=BACKBONES, help='encoder')
parser.add_argument('--model-name', required=True, help='run name: checkpoint/<name> and log/<name> by default')
parser.add_argument('--model-pretrain-initialization', default=None,
                    help="a checkpoint (BackgroundMattingV2, DeepLabV3 or this project's) whose matching tensors "
                         "initialise the model, or 'imagenet' for torchvision's backbone weights (downloaded once)")
parser.add_argument('--model-last-checkpoint', default=None,
                    help="a checkpoint to start from: this project's training checkpoint continues training "
                         "(optimizer, epoch, step); a bare state dict (the original project's or "
                         "BackgroundMattingV2's) loads the tensors that match by name and shape, as the original did")
parser.add_argument('--without-convlstm', action='store_true',
                    help='the ablation: same model, ConvLSTM states zero at every frame')
parser.add_argument('--model-refine', action='store_true',
                    help='train MattingRefine: the network at --refine-backbone-scale of the crop and the refiner at '
                         'full size, starting from a MattingBase checkpoint (--model-last-checkpoint or '
                         '--model-pretrain-initialization); use crops of which that scale is still 64 pixels or more')
parser.add_argument('--refine-backbone-scale', type=float, default=0.25,
                    help='--model-refine: scale the network runs at, in (0, 0.5]')
parser.add_argument('--refine-mode', default='sampling', choices=REFINE_MODES,
                    help="--model-refine: which 4x4 patches the refiner recomputes, and so learns from: 'sampling' "
                         "(BackgroundMattingV2's) the --refine-sample-pixels of largest predicted error")
parser.add_argument('--refine-sample-pixels', type=int, default=80_000,
                    help="--model-refine: pixels refined in 'sampling' mode (80,000 covers every patch of a crop up "
                         "to 282x282)")
parser.add_argument('--refine-threshold', type=float, default=0.1,
                    help="--model-refine: predicted-error threshold of 'thresholding' mode")
parser.add_argument('--batch-size', type=int, default=4, help='sequences per step and per process')
parser.add_argument('--seq-length', type=int, default=8, help='frames per sequence')
parser.add_argument('--resolution', type=int, default=224, help='training crop size in pixels (square)')
parser.add_argument('--num-workers', type=int, default=0, help='DataLoader worker processes per training process')
parser.add_argument('--epoch-start', type=int, default=0,
                    help='first epoch (with a bare --model-last-checkpoint); steps count on from the epochs before it')
parser.add_argument('--epoch-end', type=int, default=10, help='train until this epoch (exclusive)')
parser.add_argument('--max-steps', type=int, default=None,
                    help='stop at this step; steps count from the first epoch, so --epoch-start E starts at '
                         'E x steps per epoch')
parser.add_argument('--lr-backbone', type=float, default=1e-4, help='learning rate of the encoder')
parser.add_argument('--lr-aspp', type=float, default=5e-4, help='learning rate of the ASPP')
parser.add_argument('--lr-decoder', type=float, default=5e-4, help='learning rate of the decoder and ConvLSTMs')
parser.add_argument('--lr-refiner', type=float, default=3e-4,
                    help="--model-refine: learning rate of the refiner (BackgroundMattingV2's)")
parser.add_argument('--lr-schedule', default='constant', choices=('constant', 'cosine'),
                    help='learning-rate schedule after the warm-up: constant (the original), or cosine decay to 0 at '
                         '--max-steps (else at the end of --epoch-end)')
parser.add_argument('--warmup-steps', type=int, default=0,
                    help='steps over which the learning rates rise linearly from 0 (default 0: none)')
parser.add_argument('--pha-loss', default='l1', choices=PHA_LOSSES,
                    help="alpha's loss: 'l1' (the original's) or 'l1+l2', which adds L2 of alpha so that a weak cue "
                         "(a pixel more likely the person than before, but under even odds) lowers the loss")
parser.add_argument('--grad-clip', type=float, default=0,
                    help='clip the gradients\' global L2 norm to this value (default 0: no clipping)')
parser.add_argument('--seed', type=int, default=0, help='seed of initialisation, data order and augmentation')
parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu',
                    help='torch device (default: cuda when present); under torchrun each process uses its local GPU')
parser.add_argument('--cpu-threads', type=thread_count_flag, default='auto', help=CPU_THREADS_HELP)
parser.add_argument('--amp', action=argparse.BooleanOptionalAction, default=None,
                    help='mixed precision: fp16 with a GradScaler on CUDA, bf16 autocast on a CPU with bfloat16 '
                         'instructions (an error on one without) (default: on with CUDA)')
parser.add_argument('--camouflage-strength', type=float, nargs=2, default=(1.0, 1.0), metavar=('LOW', 'HIGH'),
                    help='synthetic-camouflage: each training clip\'s camouflage strength is drawn from LOW..HIGH '
                         '(1, the default: the figure and the still decoys are all background texture; 0: they are '
                         'plain figures, and only motion tells which one is the person); validation clips have 1')
parser.add_argument('--synthetic-clips', type=int, default=None,
                    help='clips of the synthetic valid split used by --log-valid-interval (default: all 32)')
parser.add_argument('--checkpoint-dir', default=None, help='default: checkpoint/<model-name>')
parser.add_argument('--log-dir', default=None, help='TensorBoard folder, default: log/<model-name>')
parser.add_argument('--resume', action='store_true', help='continue from the newest checkpoint in --checkpoint-dir')
parser.add_argument('--log-train-loss-interval', type=int, default=1, help='steps between loss logs')
parser.add_argument('--log-train-images-interval', type=int, default=20, help='steps between image logs')
parser.add_argument('--log-valid-interval', type=int, default=1000,
                    help='steps between validations (loss, MAD, MSE on the valid split); 0 disables')
parser.add_argument('--checkpoint-interval', type=int, default=1000, help='steps between checkpoints')
parser.add_argument('--keep-checkpoints', type=int, default=0,
                    help='keep only the newest N checkpoints in --checkpoint-dir (default 0: keep all); every epoch '
                         'ends in one, so short epochs fill a disk')


# The flags that define a run. A run continued from a training checkpoint takes them from it; their defaults apply
# to new runs.
RUN_SETTINGS = ('without_convlstm', 'batch_size', 'seq_length', 'resolution', 'lr_backbone', 'lr_aspp', 'lr_decoder',
                'lr_schedule', 'warmup_steps', 'grad_clip', 'pha_loss', 'seed', 'camouflage_strength', 'model_refine',
                'refine_backbone_scale', 'refine_mode', 'refine_sample_pixels', 'refine_threshold', 'lr_refiner')
REFINE_FLAGS = ('refine_backbone_scale', 'refine_mode', 'refine_sample_pixels', 'refine_threshold', 'lr_refiner')


def main() -> None:
    # The run's settings parse to None when not given, so that a checkpoint being continued can supply them.
    args = parser.parse_args(namespace=argparse.Namespace(**dict.fromkeys(RUN_SETTINGS)))
    threading.excepthook = leave_log_errors_to_the_main_thread
    try:
        status = train(args)
    except UserError as error:
        sys.exit(f'error: {error}')
    except OSError as error:  # checkpoints and the log in training report theirs (save, log_failed); this is the rest
        if error.errno is None:
            raise
        if error.errno in DISK_FULL_ERRNOS:
            sys.exit(f'error: the disk is full ({error}): free some space, or choose another --log-dir or '
                     f'--checkpoint-dir; --resume continues from the newest checkpoint')
        if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            sys.exit(f'error: {error}: check that --checkpoint-dir and --log-dir are writable')
        sys.exit(f'error: {error}')
    sys.exit(status)


def leave_log_errors_to_the_main_thread(hook: threading.ExceptHookArgs) -> None:
    """Print no traceback for a failed write of TensorBoard's writer thread (a full disk): it keeps the error for the
    main thread, which saves the steps done and reports it in one line (log_failed)."""
    if not (isinstance(hook.exc_value, OSError) and type(hook.thread).__module__.startswith('tensorboard.')):
        threading.__excepthook__(hook)


@dataclasses.dataclass
class Run:
    """What a training run works with, set up once by train()."""
    args: argparse.Namespace
    rank: int
    world_size: int
    device: torch.device
    amp_dtype: torch.dtype | None  # autocast's dtype; None: full precision
    model: nn.Module  # under torchrun wrapped in DistributedDataParallel
    optimizer: torch.optim.Optimizer
    scaler: 'torch.amp.GradScaler'  # a no-op unless fp16 on CUDA
    checkpoint_dir: str
    log_dir: str
    writer: SummaryWriter | None  # on rank 0 only
    total_steps: int  # where the cosine schedule reaches 0
    threads: FreeCoreThreads


@dataclasses.dataclass
class Position:
    """Where training stands: the epoch, the steps done in all (counted from epoch 0), the batches done in this
    epoch, and the step of the newest checkpoint of this process."""
    epoch: int
    step: int
    batch_in_epoch: int
    saved_step: int


def train(args: argparse.Namespace) -> int:
    """Train as the flags say, holding --checkpoint-dir's lock throughout. Returns the exit status: 0, or 128 + the
    signal's number when SIGINT or SIGTERM stopped training (after saving a checkpoint), as shells report it."""
    rank, world_size, device = setup_distributed(args.device)
    checkpoint_dir = args.checkpoint_dir or os.path.join('checkpoint', args.model_name)
    log_dir = args.log_dir or os.path.join('log', args.model_name)
    # Here, not at the first save: an unwritable folder must not cost a run's first thousand steps. Every rank
    # checks, so that under torchrun all of them stop alike.
    check_output_folder(checkpoint_dir, '--checkpoint-dir')
    check_output_folder(log_dir, '--log-dir')
    lock = FolderLock(checkpoint_dir, '--checkpoint-dir')
    try:
        if rank == 0:
            lock.acquire()
        return train_in_folder(args, rank, world_size, device, checkpoint_dir, log_dir)
    finally:
        lock.release()


def train_in_folder(args: argparse.Namespace, rank: int, world_size: int, device: torch.device,
                    checkpoint_dir: str, log_dir: str) -> int:
    """train() once --checkpoint-dir is this run's: settings, data, model, where to start, then the epochs."""
    path = newest_checkpoint(checkpoint_dir) if args.resume else args.model_last_checkpoint
    if args.resume and path is None:
        print(f'--resume: no checkpoint in {checkpoint_dir}, starting from scratch')
    checkpoint = read_checkpoint(path) if path else {}
    if args.model_refine and is_training_checkpoint(checkpoint) and not checkpoint['args'].get('model_refine'):
        checkpoint = start_refiner_from(checkpoint, path, args)
    for name in RUN_SETTINGS:
        setattr(args, name, recorded_setting(checkpoint, name, getattr(args, name), parser.get_default(name),
                                             f'checkpoint {path}'))
    check_flags(args)
    continued = path if is_training_checkpoint(checkpoint) else None
    check_same_dataset(args, checkpoint, continued)
    refuse_another_run(args, checkpoint_dir, continued)
    if continued and finished(args, checkpoint, continued):
        return 0
    reuse_freed_cpu_memory(device)
    amp_dtype = mixed_precision_dtype(args.amp, device)
    dataset, valid_dataset = make_datasets(args)
    batches_per_epoch = len(epoch_indices(len(dataset), 0, args.seed, rank, world_size)) // args.batch_size
    if batches_per_epoch == 0:
        raise DatasetError(f'the {args.dataset_name} training split has {len(dataset)} sequences per process, '
                           f'fewer than --batch-size {args.batch_size}: lower --batch-size')

    torch.manual_seed(args.seed)
    model = make_model(args).to(device)
    optimizer = torch.optim.AdamW(parameter_groups(model, args))
    scaler = make_grad_scaler(enabled=amp_dtype == torch.float16)
    position = start_position(args, path, checkpoint, model, optimizer, scaler, batches_per_epoch, rank == 0)
    if world_size > 1:
        if device.type == 'cuda':
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        # Outside 'full' mode, a batch whose predicted error selects no patch leaves the refiner without gradients.
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == 'cuda' else None,
                                        find_unused_parameters=args.model_refine and args.refine_mode != 'full')
    run = Run(args, rank, world_size, device, amp_dtype, model, optimizer, scaler, checkpoint_dir, log_dir,
              SummaryWriter(log_dir) if rank == 0 else None, args.max_steps or args.epoch_end * batches_per_epoch,
              FreeCoreThreads(device, args.cpu_threads))
    return train_epochs(run, dataset, valid_dataset, position, batches_per_epoch)


def start_refiner_from(checkpoint: dict, path: str, args: argparse.Namespace) -> dict:
    """The second stage: a MattingBase training checkpoint starts MattingRefine's training with its weights, backbone
    and --without-convlstm, not its optimizer, position or training settings. Returns it as a bare state dict."""
    if args.resume:
        raise UserError(f'--model-refine --resume: {path} is a MattingBase run\'s checkpoint; start the refiner in '
                        f'another --checkpoint-dir with --model-last-checkpoint {path}')
    args.without_convlstm = recorded_setting(checkpoint, 'without_convlstm', args.without_convlstm, False,
                                             f'checkpoint {path}')
    return {'model': checkpoint['model'], 'backbone': checkpoint['backbone']}


def parameter_groups(model: MattingBase, args: argparse.Namespace) -> list[dict]:
    """The optimizer's groups, each with its learning rate: backbone, ASPP, decoder, and the refiner's."""
    rates = [(model.backbone, args.lr_backbone), (model.aspp, args.lr_aspp), (model.decoder, args.lr_decoder)]
    if args.model_refine:
        rates.append((model.refiner, args.lr_refiner))
    return [{'params': module.parameters(), 'lr': lr, 'base_lr': lr} for module, lr in rates]


def train_epochs(run: Run, dataset, valid_dataset, position: Position, batches_per_epoch: int) -> int:
    """Epochs from `position` to --epoch-end or --max-steps, a checkpoint at the end of each; train()'s status."""
    stop = StopRequest()
    # Built once: its workers persist across epochs.
    loader = TrainLoader(dataset, run.args.batch_size, run.args.num_workers, run.device, run.args.seed,
                         worker_init_fn=leave_stop_signals_to_the_main_process)
    while position.epoch < run.args.epoch_end and not reached(position.step, run.args.max_steps):
        ended_by = train_epoch(run, dataset, loader, valid_dataset, position, stop, batches_per_epoch)
        if ended_by == 'interrupted':
            return 128 + stop.signal
        if ended_by == 'end of epoch':
            position.epoch, position.batch_in_epoch = position.epoch + 1, 0
            if position.saved_step != position.step:
                save(run, position, f'end of epoch {position.epoch - 1}')
    if position.saved_step != position.step:
        save(run, position, 'end of training')
    if run.writer:
        try:
            run.writer.flush()  # close() would not report an error of the writer thread
            run.writer.close()
        except OSError as error:
            raise log_failed(run, position, error) from None
    if run.world_size > 1:
        dist.destroy_process_group()
    return 0


def train_epoch(run: Run, dataset, loader: TrainLoader, valid_dataset, position: Position, stop: 'StopRequest',
                batches_per_epoch: int) -> str:
    """Train from `position` on until the end of its epoch, --max-steps or a stop request, logging and saving
    checkpoints on the way. Returns what ended it: 'end of epoch', 'max steps' or 'interrupted'."""
    args = run.args
    run.model.train()
    indices = epoch_indices(len(dataset), position.epoch, args.seed, run.rank, run.world_size)
    remaining = indices[position.batch_in_epoch * args.batch_size:]  # a resumed epoch skips the batches done
    # Counted by hand, not by iterating: a bar over the loader would miss the step that ends the run.
    progress = tqdm(initial=position.batch_in_epoch,
                    total=batches_this_epoch(position, batches_per_epoch, args.max_steps), disable=run.rank != 0,
                    desc=f'epoch {position.epoch}', dynamic_ncols=True)
    try:
        batches = iter(loader.epoch(position.epoch, remaining))
        return train_batches(run, valid_dataset, position, stop, loader, batches, progress)
    finally:
        progress.close()  # before an error's line, not after it at exit


def train_batches(run: Run, valid_dataset, position: Position, stop: 'StopRequest', loader: TrainLoader, batches,
                  progress: tqdm) -> str:
    """train_epoch's steps, one per batch of `batches` (from `loader`), counted on `progress`; train_epoch's
    result."""
    args = run.args
    while True:
        try:
            true_fgr, true_pha, true_bgr = next(batches)
        except StopIteration:
            return 'end of epoch'
        except DatasetError:  # a bad frame: keep the steps done so far, then report it
            if position.saved_step != position.step:
                save(run, position, 'stopped by a data error')
            raise
        true_src = true_fgr * true_pha + true_bgr * (1 - true_pha)
        predictions, losses = train_step(run, position, true_src, true_pha, true_fgr)
        run.threads.update()
        position.step += 1
        position.batch_in_epoch += 1
        progress.set_postfix(step=position.step, loss=f"{losses['total'].item():.4f}", refresh=False)
        progress.update()
        try:
            log_step(run, position.step, losses, true_src, true_pha, predictions)
            if run.writer and position.step % args.log_train_loss_interval == 0:
                run.writer.add_scalar('train/data_wait_share', loader.wait_share(), position.step)
                run.writer.add_scalar('train/cpu_threads', run.threads.threads, position.step)
            if valid_dataset is not None and position.step % args.log_valid_interval == 0:
                if run.writer:
                    log_validation(run.writer, bare_model(run.model), valid_dataset, run.device, run.amp_dtype,
                                   position.step, args.pha_loss)
                run.model.train()
        except OSError as error:
            raise log_failed(run, position, error) from None
        if position.step % args.checkpoint_interval == 0:
            save(run, position, 'checkpoint interval')
        if stop.requested(run.device, run.world_size):
            save(run, position, 'interrupted')
            return 'interrupted'
        if reached(position.step, args.max_steps):
            return 'max steps'


def train_step(run: Run, position: Position, true_src: torch.Tensor, true_pha: torch.Tensor,
               true_fgr: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], dict[str, torch.Tensor]]:
    """One optimizer step on a batch: src/fgr (B, T, 3, H, W), pha (B, T, 1, H, W) in 0..1 on the device.
    Returns (pred_pha, pred_fgr, pred_err) and the losses; UserError when the loss is not finite."""
    predictions, losses, _ = forward_and_loss(run.model, true_src, true_pha, true_fgr, run.amp_dtype,
                                              pha_loss=run.args.pha_loss)
    if not torch.isfinite(losses['total']):
        raise UserError(f"the loss became {losses['total'].item()} at step {position.step + 1} "
                        f"(epoch {position.epoch}): no checkpoint written; lower the learning rates or try --no-amp")
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(losses['total']).backward()
    if run.args.grad_clip:
        run.scaler.unscale_(run.optimizer)
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.args.grad_clip)
    factor = lr_factor(position.step, run.args.warmup_steps, run.total_steps, run.args.lr_schedule)
    for group in run.optimizer.param_groups:
        group['lr'] = group['base_lr'] * factor
    run.scaler.step(run.optimizer)
    run.scaler.update()
    return predictions, losses


def forward_and_loss(model: nn.Module, true_src: torch.Tensor, true_pha: torch.Tensor, true_fgr: torch.Tensor,
                     amp_dtype: torch.dtype | None, state: list | None = None, pha_loss: str = 'l1'
                     ) -> tuple[tuple[torch.Tensor, ...], dict[str, torch.Tensor], list]:
    """The model on src (B, T, 3, H, W) under autocast, and its loss in fp32: matting_loss (with --pha-loss) for
    MattingBase, refine_loss (refined and coarse outputs) for MattingRefine. Returns fp32 (pha, fgr, err) in 0..1 for
    logs and metrics (err at the network's scale), the losses and the new ConvLSTM state."""
    with torch.autocast(true_src.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        outputs = model(true_src, state)
    if isinstance(bare_model(model), MattingRefine):
        pha, fgr, pha_sm, fgr_sm, err_sm = (output.float() for output in outputs[:5])
        return (pha, fgr, err_sm), refine_loss(pha, fgr, pha_sm, fgr_sm, err_sm, true_pha, true_fgr), outputs[-1]
    pha, fgr, err = (output.float() for output in outputs[:3])
    return (pha, fgr, err), matting_loss(pha, fgr, err, true_pha, true_fgr, pha_loss), outputs[-1]


def log_step(run: Run, step: int, losses: dict[str, torch.Tensor], true_src: torch.Tensor, true_pha: torch.Tensor,
             predictions: tuple[torch.Tensor, ...]) -> None:
    """The losses and learning rates, and images, to TensorBoard at their intervals (rank 0 only)."""
    if run.writer is None:
        return
    if step % run.args.log_train_loss_interval == 0:
        for name, value in losses.items():
            run.writer.add_scalar(f'train/loss_{name}', value.item(), step)
        for group, name in zip(run.optimizer.param_groups, ('backbone', 'aspp', 'decoder', 'refiner')):
            run.writer.add_scalar(f'train/lr_{name}', group['lr'], step)
    if step % run.args.log_train_images_interval == 0:
        log_images(run.writer, 'train', step, true_src, true_pha, *predictions)


def save(run: Run, position: Position, reason: str) -> None:
    """A checkpoint of `position` (written by rank 0), after checking the weights are finite and, under torchrun,
    the same in every process; UserError otherwise, and when --checkpoint-dir cannot be written (write_checkpoint)."""
    previous, position.saved_step = position.saved_step, position.step
    if not all(torch.isfinite(parameter).all() for parameter in run.model.parameters()):
        raise UserError(f'the weights became non-finite by step {position.step} (epoch {position.epoch}): no '
                        f'checkpoint written; lower the learning rates or try --no-amp')
    if not outputs_finite(bare_model(run.model), run.device):
        raise UserError(f'the model outputs non-finite values at step {position.step} (epoch {position.epoch}), '
                        f'though its weights are finite: no checkpoint written; lower the learning rates or try '
                        f'--no-amp')
    agreement = f', {run.world_size} replicas agree on the weights' if run.world_size > 1 else ''
    if run.world_size > 1:
        check_replicas_agree(run.model, run.world_size)
    if run.rank == 0:
        path = write_checkpoint(run, position, previous)
        tqdm.write(f'{reason}: saved {path}{agreement}')
        if run.args.keep_checkpoints:
            remove_old_checkpoints(run.checkpoint_dir, run.args.keep_checkpoints)


def write_checkpoint(run: Run, position: Position, previous: int) -> str:
    """save_checkpoint into --checkpoint-dir; where that fails (a full disk, a file system turned read-only), into
    --log-dir instead, so that the steps done are kept wherever they can be, and a UserError saying where they are.
    `previous` is the step of the run's newest checkpoint."""
    def write(folder: str) -> str:
        return save_checkpoint(folder, bare_model(run.model), run.optimizer, run.scaler, run.args, position.epoch,
                               position.step, position.batch_in_epoch)

    try:
        return write(run.checkpoint_dir)
    except (OSError, OutputFolderError) as error:
        failed = f'cannot write the checkpoint of step {position.step} into --checkpoint-dir {run.checkpoint_dir} ' \
                 f'({cause(error)})'
    try:
        path = write(run.log_dir)
    except (OSError, OutputFolderError) as error:
        raise UserError(f'{failed}, nor into --log-dir {run.log_dir} ({cause(error)}): the steps after {previous} '
                        f'are lost; make the folder writable (or free space), then --resume continues from the newest '
                        f'checkpoint') from None
    raise UserError(f'{failed}: saved {path} instead; move it into {run.checkpoint_dir} once that is writable, then '
                    f'--resume continues from it')


def log_failed(run: Run, position: Position, error: OSError) -> UserError:
    """The error to raise when TensorBoard's log cannot be written (a full disk): the steps done are saved first."""
    if position.saved_step != position.step:
        save(run, position, 'stopped as the log cannot be written')
    return UserError(f'--log-dir {run.log_dir}: cannot write the TensorBoard log ({cause(error)}): free some space '
                     f'or choose another --log-dir, then --resume continues from the newest checkpoint')


def cause(error: Exception) -> str:
    """Why a write failed, in a few words: 'the disk is full', 'Read-only file system'."""
    return error.reason if isinstance(error, OutputFolderError) else getattr(error, 'strerror', None) or str(error)


def start_position(args: argparse.Namespace, path: str | None, checkpoint: dict, model: MattingBase,
                   optimizer: torch.optim.Optimizer, scaler, batches_per_epoch: int, verbose: bool) -> Position:
    """Load `checkpoint` (read from `path`, that --resume or --model-last-checkpoint named) or what
    --model-pretrain-initialization names, and return where training starts: a training checkpoint continues
    exactly (weights, optimizer, scaler, position, random states); a bare state dict or an initialisation loads
    weights only."""
    start = args.epoch_start * batches_per_epoch
    if is_training_checkpoint(checkpoint):
        return continue_training(checkpoint, path, args.model_backbone, model, optimizer, scaler, verbose)
    if path:  # a bare state dict, the original project's or BackgroundMattingV2's: loaded as the original did
        load_weights(model, args.model_backbone, checkpoint, f'--model-last-checkpoint {path}', 'encoder', verbose)
    elif args.model_pretrain_initialization == 'imagenet':
        load_weights(model, args.model_backbone, imagenet_weights(args.model_backbone), 'the ImageNet weights',
                     'any')
    elif args.model_pretrain_initialization:
        source = args.model_pretrain_initialization
        load_weights(model, args.model_backbone, read_checkpoint(source),
                     f'--model-pretrain-initialization {source}', 'any', verbose)
    if reached(start, args.max_steps):
        raise UserError(f'--max-steps {args.max_steps} counts all steps, and --epoch-start {args.epoch_start} '
                        f'starts at step {start} ({batches_per_epoch} per epoch): give a larger --max-steps')
    return Position(args.epoch_start, start, 0, start)


def continue_training(checkpoint: dict, path: str, backbone: str, model: MattingBase,
                      optimizer: torch.optim.Optimizer, scaler, verbose: bool) -> Position:
    """Restore a training checkpoint's weights, optimizer, scaler and random states; returns its position."""
    load_weights(model, backbone, checkpoint, f'checkpoint {path}')
    optimizer.load_state_dict(checkpoint['optimizer'])
    for group in optimizer.param_groups:  # a checkpoint from before the schedule flags: a constant rate
        group.setdefault('base_lr', group['lr'])
    if checkpoint['scaler']:  # empty when saved without AMP; an enabled GradScaler then starts afresh
        scaler.load_state_dict(checkpoint['scaler'])
    set_random_states(checkpoint['random_states'])
    if verbose:
        print(f"Continuing from {path}: epoch {checkpoint['epoch']}, step {checkpoint['step']}")
    return Position(checkpoint['epoch'], checkpoint['step'], checkpoint['batch_in_epoch'], checkpoint['step'])


def make_datasets(args: argparse.Namespace):
    """The training split, and the valid split when --log-valid-interval asks for validation (else None)."""
    dataset = make_dataset(args.dataset_name, 'train', args.seq_length, args.resolution, seed=args.seed,
                           videomatte_root=args.videomatte_root, backgrounds_root=args.backgrounds_root,
                           camouflage_strength=tuple(args.camouflage_strength))
    valid_dataset = None
    if args.log_valid_interval:
        valid_dataset = make_dataset(args.dataset_name, 'valid', args.seq_length, args.resolution, seed=args.seed,
                                     videomatte_root=args.videomatte_root, backgrounds_root=args.backgrounds_root,
                                     synthetic_clips=args.synthetic_clips)
    return dataset, valid_dataset


def refuse_another_run(args: argparse.Namespace, checkpoint_dir: str, continued: str | None) -> None:
    """UserError when --checkpoint-dir holds checkpoints this run does not continue: a new run there would mix its
    checkpoints with another run's (overwriting those of the same step), and a later --resume would pick the newest
    of either. `continued` is the training checkpoint this run continues, None for a new run: one from scratch, from
    weights only, or the refiner's stage started from a MattingBase checkpoint of that very folder."""
    newest = newest_checkpoint(checkpoint_dir)
    if newest is None or args.resume or (continued and same_path(continued, newest)):
        return
    if continued and in_folder(continued, checkpoint_dir):
        raise UserError(f'--model-last-checkpoint {continued} is older than the newest checkpoint of its run, '
                        f'{os.path.basename(newest)}: continuing it here would overwrite the later ones; pass --resume '
                        f'to continue from the newest, or continue it under another --model-name or --checkpoint-dir')
    if args.model_last_checkpoint and in_folder(args.model_last_checkpoint, checkpoint_dir):
        raise UserError(f'--model-last-checkpoint {args.model_last_checkpoint} starts a new run (the refiner\'s '
                        f'stage, or its weights only), which must not write into the folder of the run it comes from: '
                        f'choose another --model-name or --checkpoint-dir')
    raise UserError(f'--checkpoint-dir {checkpoint_dir} holds checkpoints of an earlier run (the newest '
                    f'{os.path.basename(newest)}): pass --resume to continue that run, or choose another '
                    f'--model-name or --checkpoint-dir')


def in_folder(path: str, folder: str) -> bool:
    """Whether the file `path` lies directly in `folder`."""
    return os.path.dirname(os.path.realpath(path)) == os.path.realpath(folder)


def check_same_dataset(args: argparse.Namespace, checkpoint: dict, continued: str | None) -> None:
    """UserError when the training checkpoint `continued` was trained on another --dataset-name: a run is trained on
    one dataset (--dataset-name is required, so it is checked here rather than with RUN_SETTINGS)."""
    recorded = checkpoint['args'].get('dataset_name') if continued else None
    if recorded is not None and recorded != args.dataset_name:
        raise UserError(f'--dataset-name {args.dataset_name} contradicts checkpoint {continued}, trained on '
                        f'--dataset-name {recorded}: give --dataset-name {recorded} to continue that run, or start a '
                        f'new one from its weights with --model-pretrain-initialization {continued} and another '
                        f'--model-name')


def finished(args: argparse.Namespace, checkpoint: dict, path: str) -> bool:
    """Whether the training checkpoint `path` is where --max-steps or --epoch-end ends training (then says so: nothing
    is trained or written); UserError when it is past that point, which this run could not honour."""
    step, epoch = checkpoint['step'], checkpoint['epoch']
    if args.max_steps is not None and step > args.max_steps:
        raise UserError(f'--max-steps {args.max_steps} is behind checkpoint {path}, at step {step}: give a '
                        f'--max-steps above {step} to train further')
    if epoch > args.epoch_end or (epoch == args.epoch_end and checkpoint['batch_in_epoch'] > 0):
        raise UserError(f'--epoch-end {args.epoch_end} is behind checkpoint {path}, in epoch {epoch}: give an '
                        f'--epoch-end above {epoch} to train further')
    if reached(step, args.max_steps):
        print(f'{path} is at step {step}, the --max-steps of this run: it is finished, nothing to train. Give a '
              f'larger --max-steps to train further.')
        return True
    if epoch == args.epoch_end:
        print(f'{path} is at the end of epoch {epoch - 1}, the last before --epoch-end {args.epoch_end}: the run is '
              f'finished, nothing to train. Give a larger --epoch-end to train further.')
        return True
    return False


def mixed_precision_dtype(amp_flag: bool | None, device: torch.device) -> torch.dtype | None:
    """autocast's dtype for --amp (default: on with CUDA), or None without mixed precision; DeviceError for --amp
    on a CPU without bfloat16 instructions, where it would be slower."""
    if not (amp_flag if amp_flag is not None else device.type == 'cuda'):
        return None
    dtype = low_precision_dtype(device)
    if dtype is None:
        raise DeviceError(f'--amp: {device_name(device)} has no bfloat16 instructions (oneDNN reports none), so mixed '
                          f'precision would be slower: drop --amp')
    return dtype


def lr_factor(step: int, warmup_steps: int, total_steps: int, schedule: str) -> float:
    """The factor of each base learning rate for the update that ends step `step` + 1 (steps count from 0): a
    linear warm-up over warmup_steps, then 1 ('constant') or a cosine from 1 to 0 at total_steps ('cosine')."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == 'constant':
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return 0.5 * (1 + math.cos(math.pi * progress))


def check_flags(args: argparse.Namespace) -> None:
    """UserError for a count or interval out of range, before anything runs."""
    if args.batch_size < 1 or args.seq_length < 1 or args.batch_size * args.seq_length < 2:
        # Training BatchNorm needs more than one value per channel, and ASPP's image pooling has one per frame.
        raise UserError('--batch-size and --seq-length must be at least 1, and --batch-size x --seq-length at least 2')
    if args.num_workers < 0 or args.keep_checkpoints < 0 or args.log_valid_interval < 0:
        raise UserError('--num-workers, --keep-checkpoints and --log-valid-interval (0: no validation) must be 0 '
                        'or more')
    if min(args.log_train_loss_interval, args.log_train_images_interval, args.checkpoint_interval) < 1:
        raise UserError('--log-train-loss-interval, --log-train-images-interval and --checkpoint-interval must be '
                        'at least 1')
    bad_clips = args.synthetic_clips is not None and args.synthetic_clips < 1
    if args.warmup_steps < 0 or args.grad_clip < 0 or bad_clips:
        raise UserError('--warmup-steps and --grad-clip must be 0 or more, --synthetic-clips at least 1')
    if args.epoch_start < 0 or (args.max_steps is not None and args.max_steps < 1):
        raise UserError('--epoch-start must be 0 or more and --max-steps at least 1')
    check_refine_flags(args)


def check_refine_flags(args: argparse.Namespace) -> None:
    """UserError for refiner flags without --model-refine, or out of range."""
    if not args.model_refine:
        given = [name for name in REFINE_FLAGS if getattr(args, name) != parser.get_default(name)]
        if given:
            raise UserError(f"--{given[0].replace('_', '-')} is for the refiner: add --model-refine, or drop it")
        return
    if not 0 < args.refine_backbone_scale <= 0.5 or args.refine_sample_pixels < 1 or args.lr_refiner < 0:
        raise UserError('--refine-backbone-scale must be in (0, 0.5], --refine-sample-pixels at least 1 and '
                        '--lr-refiner 0 or more')
    if args.resolution * args.refine_backbone_scale < 32:
        raise UserError(f'--resolution {args.resolution} x --refine-backbone-scale {args.refine_backbone_scale} is '
                        f'under the 32 pixels the network needs: raise --resolution (the refiner matters from 64 '
                        f'pixels at that scale, e.g. --resolution 256 with scale 0.25)')


def setup_distributed(device_flag: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device). Under torchrun: NCCL on GPUs, gloo on CPU, one GPU per local rank."""
    if 'RANK' not in os.environ:
        return 0, 1, open_device(device_flag)
    local_rank = int(os.environ['LOCAL_RANK'])
    use_cuda = open_device(device_flag).type == 'cuda'
    device = torch.device('cuda', local_rank) if use_cuda else torch.device('cpu')
    if use_cuda:
        torch.cuda.set_device(device)
    dist.init_process_group('nccl' if use_cuda else 'gloo')
    return dist.get_rank(), dist.get_world_size(), device


def epoch_indices(dataset_length: int, epoch: int, seed: int, rank: int, world_size: int) -> list[int]:
    """This process's shuffled sequence indices for `epoch`: the same for a given seed however the run was resumed."""
    sampler = DistributedSampler(range(dataset_length), num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
    sampler.set_epoch(epoch)
    return list(sampler)


def check_replicas_agree(model: torch.nn.Module, world_size: int) -> None:
    """Under torchrun every process must hold the same weights (DistributedDataParallel averages the gradients);
    compares a float64 checksum of all parameters across processes."""
    checksum = torch.stack([parameter.detach().double().sum() for parameter in model.parameters()]).sum().view(1)
    gathered = [torch.zeros_like(checksum) for _ in range(world_size)]
    dist.all_gather(gathered, checksum)
    if any(not torch.equal(other, gathered[0]) for other in gathered):
        raise UserError(f'the {world_size} processes hold different weights: {[g.item() for g in gathered]}')


def bare_model(model: nn.Module) -> MattingBase:
    """The model itself, without the DistributedDataParallel wrapper of torchrun."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def reached(step: int, max_steps: int | None) -> bool:
    return max_steps is not None and step >= max_steps


def batches_this_epoch(position: Position, batches_per_epoch: int, max_steps: int | None) -> int:
    """Where this run's batches of the epoch of `position` end (its progress bar's total): at the epoch's end, or
    sooner at --max-steps."""
    if max_steps is None:
        return batches_per_epoch
    return min(batches_per_epoch, position.batch_in_epoch + max_steps - position.step)


class StopRequest:
    """Turns Ctrl-C (SIGINT) and SIGTERM into a request that the loop honours after a complete step; under
    torchrun every process stops at the same step."""

    def __init__(self):
        self.flag = False
        self.signal = 0  # the number of the signal received
        signal.signal(signal.SIGINT, self.handle)
        signal.signal(signal.SIGTERM, self.handle)

    def handle(self, signum, frame) -> None:
        self.flag, self.signal = True, signum

    def requested(self, device: torch.device, world_size: int) -> bool:
        if world_size == 1:
            return self.flag
        flag = torch.tensor([float(self.flag)], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        requested = bool(flag.item())
        if requested and not self.signal:
            self.signal = signal.SIGTERM  # another process received it
        return requested


@torch.no_grad()
def outputs_finite(model: MattingBase, device: torch.device) -> bool:
    """Whether the model in eval mode, as validate.py and inference.py run it, gives finite outputs on a fixed
    random clip. Weights that are finite but huge can give NaN. Draws from its own generator, so that training's
    random states are untouched."""
    # MattingRefine runs its network at backbone_scale of the frame, which needs 32 pixels there.
    size = max(64, 4 * math.ceil(32 / getattr(model, 'backbone_scale', 1) / 4))
    src = torch.rand(1, 2, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    training = model.training
    model.eval()
    *outputs, _ = model(src)
    model.train(training)
    return all(torch.isfinite(output).all() for output in outputs)


def log_images(writer: SummaryWriter, tag: str, step: int, true_src: torch.Tensor, true_pha: torch.Tensor,
               pred_pha: torch.Tensor, pred_fgr: torch.Tensor, pred_err: torch.Tensor) -> None:
    """Grids of the first sequence of the batch: frames side by side; tensors (B, T, C, H, W) in 0..1."""
    images = {'true_src': true_src, 'true_pha': true_pha, 'pred_pha': pred_pha, 'pred_fgr': pred_fgr,
              'pred_err': pred_err, 'pred_com': green_screen_composite(pred_fgr, pred_pha)}
    for name, image in images.items():
        writer.add_image(f'{tag}/{name}', make_grid(image[0].detach().float().clamp(0, 1), nrow=image.shape[1]), step)


@torch.no_grad()
def log_validation(writer: SummaryWriter, model: MattingBase, dataset, device: torch.device,
                   amp_dtype: torch.dtype | None, step: int, pha_loss: str = 'l1') -> None:
    """Loss (with --pha-loss), MAD and MSE over the valid split, each clip in order with the ConvLSTM state
    carried."""
    model.eval()
    totals, frames, state, previous_clip = {}, 0, None, None
    for index, (clip, _) in enumerate(tqdm(dataset.index, desc='validation', leave=False, dynamic_ncols=True)):
        true_fgr, true_pha, true_bgr = (x.unsqueeze(0).to(device) for x in dataset[index])
        if clip != previous_clip:
            state, previous_clip = None, clip
        true_src = true_fgr * true_pha + true_bgr * (1 - true_pha)
        predictions, losses, state = forward_and_loss(model, true_src, true_pha, true_fgr, amp_dtype, state,
                                                      pha_loss)
        pred_pha, pred_fgr, pred_err = predictions
        time = true_src.shape[1]
        for name, value in losses.items():
            totals[f'loss_{name}'] = totals.get(f'loss_{name}', 0.0) + value.item() * time
        for t in range(time):
            totals['MAD'] = totals.get('MAD', 0.0) + metrics.mad(pred_pha[0, t, 0].float(), true_pha[0, t, 0])
            totals['MSE'] = totals.get('MSE', 0.0) + metrics.mse(pred_pha[0, t, 0].float(), true_pha[0, t, 0])
        frames += time
    for name, total in totals.items():
        writer.add_scalar(f'valid/{name}', total / frames, step)
    log_images(writer, 'valid', step, true_src, true_pha, pred_pha, pred_fgr, pred_err)


if __name__ == '__main__':
    main()
