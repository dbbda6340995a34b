"""Train MattingBase (with or without ConvLSTM) on VideoMatte240K sequences composited onto backgrounds.

One device:        python train.py --dataset-name synthetic --model-backbone mobilenetv2 --model-name demo
Several GPUs:      torchrun --nproc_per_node=4 train.py ...   (--batch-size is per process)
Several machines:  torchrun --nnodes=2 --node_rank=R --master_addr=HOST --nproc_per_node=4 train.py ...

Checkpoints go to --checkpoint-dir, TensorBoard logs to --log-dir. Ctrl-C saves a checkpoint and exits;
--resume continues from the newest checkpoint of --model-name with the same results as an uninterrupted run.
"""
import argparse
import glob
import math
import os
import random
import re
import signal
import sys

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from torch.utils.tensorboard import SummaryWriter
from torchvision.utils import make_grid
from tqdm import tqdm

import metrics
from atomic_file import OutputFolderError, atomic_write, check_output_folder
from data_path import DATASETS
from dataset import DatasetError, make_dataset
from devices import DeviceError, device_name, low_precision_dtype, open_device, reuse_freed_cpu_memory
from loss import matting_loss
from model import BACKBONES, MattingBase
from model.utils import (CheckpointError, backbone_of, load_checkpoint_weights, load_imagenet_backbone,
                         load_matched_state_dict, read_checkpoint, unwrap_state_dict)

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
parser.add_argument('--lr-schedule', default='constant', choices=('constant', 'cosine'),
                    help='learning-rate schedule after the warm-up: constant (the original), or cosine decay to 0 at '
                         '--max-steps (else at the end of --epoch-end)')
parser.add_argument('--warmup-steps', type=int, default=0,
                    help='steps over which the learning rates rise linearly from 0 (default 0: none)')
parser.add_argument('--grad-clip', type=float, default=0,
                    help='clip the gradients\' global L2 norm to this value (default 0: no clipping)')
parser.add_argument('--seed', type=int, default=0, help='seed of initialisation, data order and augmentation')
parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu',
                    help='torch device (default: cuda when present); under torchrun each process uses its local GPU')
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

CHECKPOINT_NAME = re.compile(r'epoch-(\d+)-iter-(\d+)\.pth$')


def main() -> None:
    args = parser.parse_args()
    try:
        train(args)
    except (DatasetError, CheckpointError, DeviceError, OutputFolderError) as error:
        sys.exit(f'error: {error}')


def train(args: argparse.Namespace) -> None:
    check_flags(args)
    rank, world_size, device = setup_distributed(args.device)
    reuse_freed_cpu_memory(device)
    use_amp = args.amp if args.amp is not None else device.type == 'cuda'
    amp_dtype = low_precision_dtype(device)
    if use_amp and amp_dtype is None:
        raise DeviceError(f'--amp: {device_name(device)} has no bfloat16 instructions (oneDNN reports none), so mixed '
                          f'precision would be slower: drop --amp')
    checkpoint_dir = args.checkpoint_dir or os.path.join('checkpoint', args.model_name)
    log_dir = args.log_dir or os.path.join('log', args.model_name)

    dataset = make_dataset(args.dataset_name, 'train', args.seq_length, args.resolution, seed=args.seed,
                           videomatte_root=args.videomatte_root, backgrounds_root=args.backgrounds_root,
                           camouflage_strength=tuple(args.camouflage_strength))
    valid_dataset = None
    if args.log_valid_interval:
        valid_dataset = make_dataset(args.dataset_name, 'valid', args.seq_length, args.resolution, seed=args.seed,
                                     videomatte_root=args.videomatte_root, backgrounds_root=args.backgrounds_root,
                                     synthetic_clips=args.synthetic_clips)
    batches_per_epoch = len(epoch_indices(len(dataset), 0, args.seed, rank, world_size)) // args.batch_size
    if batches_per_epoch == 0:
        raise DatasetError(f'the {args.dataset_name} training split has {len(dataset)} sequences per process, '
                           f'fewer than --batch-size {args.batch_size}: lower --batch-size')

    # Here, not at the first save: an unwritable folder must not cost a run's first thousand steps. Every rank checks,
    # so that under torchrun all of them stop alike.
    check_output_folder(checkpoint_dir, '--checkpoint-dir')
    check_output_folder(log_dir, '--log-dir')
    if args.keep_checkpoints and not args.resume and checkpoints_oldest_first(checkpoint_dir):
        sys.exit(f'error: --checkpoint-dir {checkpoint_dir} holds checkpoints of an earlier run, which '
                 f'--keep-checkpoints would keep in place of this run\'s: pass --resume to continue that run, or '
                 f'choose another --checkpoint-dir')

    torch.manual_seed(args.seed)
    model = MattingBase(args.model_backbone, recurrent=not args.without_convlstm).to(device)
    optimizer = torch.optim.AdamW([
        {'params': model.backbone.parameters(), 'lr': args.lr_backbone, 'base_lr': args.lr_backbone},
        {'params': model.aspp.parameters(), 'lr': args.lr_aspp, 'base_lr': args.lr_aspp},
        {'params': model.decoder.parameters(), 'lr': args.lr_decoder, 'base_lr': args.lr_decoder},
    ])
    total_steps = args.max_steps or args.epoch_end * batches_per_epoch
    scaler = make_grad_scaler(enabled=use_amp and device.type == 'cuda')
    epoch, step, batch_in_epoch = args.epoch_start, args.epoch_start * batches_per_epoch, 0

    checkpoint_path = newest_checkpoint(checkpoint_dir) if args.resume else args.model_last_checkpoint
    if args.resume and checkpoint_path is None:
        print(f'--resume: no checkpoint in {checkpoint_dir}, starting from scratch')
    continuing = False
    if checkpoint_path:
        checkpoint = read_checkpoint(checkpoint_path)
        continuing = 'optimizer' in checkpoint
        if continuing:
            load_checkpoint_weights(model, args.model_backbone, checkpoint, checkpoint_path)
            optimizer.load_state_dict(checkpoint['optimizer'])
            for group in optimizer.param_groups:  # a checkpoint from before the schedule flags: a constant rate
                group.setdefault('base_lr', group['lr'])
            if checkpoint['scaler']:  # empty when saved without AMP; an enabled GradScaler then starts afresh
                scaler.load_state_dict(checkpoint['scaler'])
            epoch, step, batch_in_epoch = checkpoint['epoch'], checkpoint['step'], checkpoint['batch_in_epoch']
            set_random_states(checkpoint['random_states'])
            if rank == 0:
                print(f'Continuing from {checkpoint_path}: epoch {epoch}, step {step}')
        else:  # a bare state dict, the original project's or BackgroundMattingV2's: loaded as the original loaded it
            load_encoder_and_matching_tensors(model, args.model_backbone, checkpoint, checkpoint_path, rank == 0)
    elif args.model_pretrain_initialization:
        initialise(model, args.model_backbone, args.model_pretrain_initialization, rank == 0)
    if not continuing and reached(step, args.max_steps):
        sys.exit(f'error: --max-steps {args.max_steps} counts all steps, and --epoch-start {args.epoch_start} starts '
                 f'at step {step} ({batches_per_epoch} per epoch): give a larger --max-steps')

    if world_size > 1:
        if device.type == 'cuda':
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == 'cuda' else None)
    writer = SummaryWriter(log_dir) if rank == 0 else None
    stop = StopRequest()

    saved_step = step

    def save(reason: str) -> None:
        nonlocal saved_step
        saved_step = step
        if not all(torch.isfinite(parameter).all() for parameter in model.parameters()):
            raise SystemExit(f'error: the weights became non-finite by step {step} (epoch {epoch}): no checkpoint '
                             f'written; lower the learning rates or try --no-amp')
        agreement = f', {world_size} replicas agree on the weights' if world_size > 1 else ''
        if world_size > 1:
            check_replicas_agree(model, world_size)
        if rank == 0:
            path = save_checkpoint(checkpoint_dir, unwrap(model), optimizer, scaler, args, epoch, step, batch_in_epoch)
            tqdm.write(f'{reason}: saved {path}{agreement}')
            if args.keep_checkpoints:
                remove_old_checkpoints(checkpoint_dir, args.keep_checkpoints)

    while epoch < args.epoch_end and not reached(step, args.max_steps):
        model.train()
        dataset.set_epoch(epoch)
        indices = epoch_indices(len(dataset), epoch, args.seed, rank, world_size)
        loader = DataLoader(dataset, batch_size=args.batch_size, sampler=indices[batch_in_epoch * args.batch_size:],
                            num_workers=args.num_workers, pin_memory=device.type == 'cuda', drop_last=True,
                            generator=torch.Generator().manual_seed(args.seed + epoch))
        progress = tqdm(loader, initial=batch_in_epoch, total=batches_per_epoch, disable=rank != 0,
                        desc=f'epoch {epoch}', dynamic_ncols=True)
        for true_fgr, true_pha, true_bgr in progress:
            true_fgr, true_pha, true_bgr = (x.to(device, non_blocking=True) for x in (true_fgr, true_pha, true_bgr))
            true_src = true_fgr * true_pha + true_bgr * (1 - true_pha)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                pred_pha, pred_fgr, pred_err, _, _ = model(true_src)
            losses = matting_loss(pred_pha.float(), pred_fgr.float(), pred_err.float(), true_pha, true_fgr)
            if not torch.isfinite(losses['total']):
                raise SystemExit(f"error: the loss became {losses['total'].item()} at step {step + 1} "
                                 f"(epoch {epoch}): no checkpoint written; lower the learning rates or try --no-amp")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(losses['total']).backward()
            if args.grad_clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
            for group in optimizer.param_groups:
                group['lr'] = group['base_lr'] * lr_factor(step, args.warmup_steps, total_steps, args.lr_schedule)
            scaler.step(optimizer)
            scaler.update()
            step += 1
            batch_in_epoch += 1
            progress.set_postfix(step=step, loss=f"{losses['total'].item():.4f}")

            if writer and step % args.log_train_loss_interval == 0:
                for name, value in losses.items():
                    writer.add_scalar(f'train/loss_{name}', value.item(), step)
                for group, name in zip(optimizer.param_groups, ('backbone', 'aspp', 'decoder')):
                    writer.add_scalar(f'train/lr_{name}', group['lr'], step)
            if writer and step % args.log_train_images_interval == 0:
                log_images(writer, 'train', step, true_src, true_pha, pred_pha, pred_fgr, pred_err)
            if valid_dataset is not None and step % args.log_valid_interval == 0:
                if writer:
                    log_validation(writer, unwrap(model), valid_dataset, device, use_amp, amp_dtype, step)
                model.train()
            if step % args.checkpoint_interval == 0:
                save('checkpoint interval')
            if stop.requested(device, world_size):
                save('interrupted')
                return
            if reached(step, args.max_steps):
                break
        else:
            epoch, batch_in_epoch = epoch + 1, 0
            if saved_step != step:
                save(f'end of epoch {epoch - 1}')
    if saved_step != step:
        save('end of training')
    if writer:
        writer.close()
    if world_size > 1:
        dist.destroy_process_group()


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
    """Exit with one line for a count or interval out of range, before anything runs."""
    if args.batch_size < 1 or args.seq_length < 1 or args.batch_size * args.seq_length < 2:
        # Training BatchNorm needs more than one value per channel, and ASPP's image pooling has one per frame.
        sys.exit('error: --batch-size and --seq-length must be at least 1, and --batch-size x --seq-length at least 2')
    if args.num_workers < 0 or args.keep_checkpoints < 0 or args.log_valid_interval < 0:
        sys.exit('error: --num-workers, --keep-checkpoints and --log-valid-interval (0: no validation) must be 0 '
                 'or more')
    if min(args.log_train_loss_interval, args.log_train_images_interval, args.checkpoint_interval) < 1:
        sys.exit('error: --log-train-loss-interval, --log-train-images-interval and --checkpoint-interval must be '
                 'at least 1')
    bad_clips = args.synthetic_clips is not None and args.synthetic_clips < 1
    if args.warmup_steps < 0 or args.grad_clip < 0 or bad_clips:
        sys.exit('error: --warmup-steps and --grad-clip must be 0 or more, --synthetic-clips at least 1')
    if args.epoch_start < 0 or (args.max_steps is not None and args.max_steps < 1):
        sys.exit('error: --epoch-start must be 0 or more and --max-steps at least 1')


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
        raise SystemExit(f'error: the {world_size} processes hold different weights: {[g.item() for g in gathered]}')


def make_grad_scaler(enabled: bool):
    """A GradScaler for fp16 on CUDA (a no-op when disabled); torch.amp.GradScaler from torch 2.3 on."""
    if hasattr(torch.amp, 'GradScaler'):
        return torch.amp.GradScaler('cuda', enabled=enabled)
    return torch.cuda.amp.GradScaler(enabled=enabled)


def initialise(model: MattingBase, backbone: str, source: str, verbose: bool) -> None:
    """--model-pretrain-initialization: 'imagenet', or a checkpoint file (BackgroundMattingV2, DeepLabV3 or ours)."""
    if source == 'imagenet':
        load_imagenet_backbone(model, backbone)
        return
    load_matching_tensors(model, backbone, read_checkpoint(source), f'--model-pretrain-initialization {source}',
                          verbose)


def load_encoder_and_matching_tensors(model: MattingBase, backbone: str, checkpoint: dict, path: str,
                                      verbose: bool) -> None:
    """A bare --model-last-checkpoint: the matching tensors, of which the whole encoder (backbone and ASPP) must be,
    as in this project's, the original project's and BackgroundMattingV2's state dicts; CheckpointError otherwise."""
    what = f'--model-last-checkpoint {path}'
    report = load_matching_tensors(model, backbone, checkpoint, what, verbose)
    # A whole encoder implies backbone_of found this backbone: its identifying tensors are among those loaded.
    loaded = set(report['loaded']) | set(report['source_channels'])
    encoder = [name for name in model.state_dict() if name.startswith(('backbone.', 'aspp.'))]
    missing = [name for name in encoder if name not in loaded]
    if missing:
        raise CheckpointError(f'{what} is not a checkpoint of this model or of BackgroundMattingV2 (its encoder lacks '
                              f'{len(missing)} of {len(encoder)} tensors, e.g. {missing[:2]}); to load only the '
                              f'tensors that match, pass it to --model-pretrain-initialization')


def load_matching_tensors(model: MattingBase, backbone: str, checkpoint: dict, what: str, verbose: bool) -> dict:
    """Copy the tensors of `checkpoint` that match the model by name and shape (printing how many if verbose) and
    return load_matched_state_dict's report. CheckpointError, whose message starts with `what` (the flag and file),
    for another backbone's checkpoint or no matching tensor."""
    found = backbone_of(unwrap_state_dict(checkpoint))
    if found is not None and found != backbone:
        raise CheckpointError(f'{what} was made with backbone {found}, but --model-backbone is {backbone}')
    report = load_matched_state_dict(model, checkpoint, print_stats=verbose)
    if not report['loaded']:
        raise CheckpointError(f'{what}: no tensor matches this model')
    return report


def unwrap(model: torch.nn.Module) -> MattingBase:
    return model.module if isinstance(model, DistributedDataParallel) else model


def reached(step: int, max_steps: int | None) -> bool:
    return max_steps is not None and step >= max_steps


class StopRequest:
    """Turns Ctrl-C (SIGINT) and SIGTERM into a request that the loop honours after a complete step; under
    torchrun every process stops at the same step."""

    def __init__(self):
        self.flag = False
        signal.signal(signal.SIGINT, self.handle)
        signal.signal(signal.SIGTERM, self.handle)

    def handle(self, signum, frame) -> None:
        self.flag = True

    def requested(self, device: torch.device, world_size: int) -> bool:
        if world_size == 1:
            return self.flag
        flag = torch.tensor([float(self.flag)], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())


def random_states() -> dict:
    states = {'torch': torch.get_rng_state(), 'numpy': np.random.get_state(), 'python': random.getstate()}
    if torch.cuda.is_available():
        states['cuda'] = torch.cuda.get_rng_state_all()
    return states


def set_random_states(states: dict) -> None:
    torch.set_rng_state(states['torch'])
    np.random.set_state(states['numpy'])
    random.setstate(states['python'])
    if 'cuda' in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states['cuda'])


def save_checkpoint(folder: str, model: MattingBase, optimizer, scaler, args: argparse.Namespace,
                    epoch: int, step: int, batch_in_epoch: int) -> str:
    """Write everything needed to continue training exactly, atomically, as <folder>/epoch-E-iter-S.pth."""
    path = os.path.join(folder, f'epoch-{epoch}-iter-{step}.pth')
    checkpoint = {'model': model.state_dict(), 'optimizer': optimizer.state_dict(), 'scaler': scaler.state_dict(),
                  'epoch': epoch, 'step': step, 'batch_in_epoch': batch_in_epoch, 'args': vars(args),
                  'backbone': args.model_backbone, 'random_states': random_states()}
    with atomic_write(path) as file:
        torch.save(checkpoint, file)
    return path


def checkpoints_oldest_first(folder: str) -> list[str]:
    """The epoch-E-iter-S.pth files of `folder`, ordered by epoch, then step."""
    found = sorted((tuple(int(number) for number in CHECKPOINT_NAME.search(path).groups()), path)
                   for path in glob.glob(os.path.join(folder, '*.pth')) if CHECKPOINT_NAME.search(path))
    return [path for _, path in found]


def remove_old_checkpoints(folder: str, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints of `folder`."""
    for path in checkpoints_oldest_first(folder)[:-keep]:
        os.remove(path)


def newest_checkpoint(folder: str) -> str | None:
    """The newest checkpoint in `folder`, or None."""
    found = checkpoints_oldest_first(folder)
    return found[-1] if found else None


def log_images(writer: SummaryWriter, tag: str, step: int, true_src: torch.Tensor, true_pha: torch.Tensor,
               pred_pha: torch.Tensor, pred_fgr: torch.Tensor, pred_err: torch.Tensor) -> None:
    """Grids of the first sequence of the batch: frames side by side; tensors (B, T, C, H, W) in 0..1."""
    green = torch.tensor([120 / 255, 1.0, 155 / 255], device=pred_fgr.device).view(1, 1, 3, 1, 1)
    composite = pred_fgr * pred_pha + green * (1 - pred_pha)
    images = {'true_src': true_src, 'true_pha': true_pha, 'pred_pha': pred_pha, 'pred_fgr': pred_fgr,
              'pred_err': pred_err, 'pred_com': composite}
    for name, image in images.items():
        writer.add_image(f'{tag}/{name}', make_grid(image[0].detach().float().clamp(0, 1), nrow=image.shape[1]), step)


@torch.no_grad()
def log_validation(writer: SummaryWriter, model: MattingBase, dataset, device: torch.device, use_amp: bool,
                   amp_dtype: torch.dtype, step: int) -> None:
    """Loss, MAD and MSE over the valid split, each clip in order with the ConvLSTM state carried."""
    model.eval()
    totals, frames, state, previous_clip = {}, 0, None, None
    for index, (clip, _) in enumerate(tqdm(dataset.index, desc='validation', leave=False, dynamic_ncols=True)):
        true_fgr, true_pha, true_bgr = (x.unsqueeze(0).to(device) for x in dataset[index])
        if clip != previous_clip:
            state, previous_clip = None, clip
        true_src = true_fgr * true_pha + true_bgr * (1 - true_pha)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
            pred_pha, pred_fgr, pred_err, _, state = model(true_src, state)
        losses = matting_loss(pred_pha.float(), pred_fgr.float(), pred_err.float(), true_pha, true_fgr)
        time = true_src.shape[1]
        for name, value in losses.items():
            totals[f'loss_{name}'] = totals.get(f'loss_{name}', 0.0) + value.item() * time
        for t in range(time):
            totals['MAD'] = totals.get('MAD', 0.0) + metrics.mad(pred_pha[0, t, 0].float(), true_pha[0, t, 0])
            totals['MSE'] = totals.get('MSE', 0.0) + metrics.mse(pred_pha[0, t, 0].float(), true_pha[0, t, 0])
        frames += time
    for name, total in totals.items():
        writer.add_scalar(f'valid/{name}', total / frames, step)
    log_images(writer, 'valid', step, true_src, true_pha, pred_pha.float(), pred_fgr.float(), pred_err.float())


if __name__ == '__main__':
    main()
