r"""Validate a checkpoint: MAD, MSE, Grad, Conn and dtSSD per frame, per clip and overall.

Every clip of the split (valid by default) runs in order, in chunks of --seq-length frames, the ConvLSTM state
carried from chunk to chunk within a clip (or reset every --reset-state-every frames) and reset between clips. Writes
<output-path>/metrics.json and metrics.csv, and with --save-images / --save-states per clip:
    <output-path>/<clip>/{pred_pha, true_pha, pred_err, true_src, pred_com}/<frame>.png
    <output-path>/<clip>/state_h_<channel>/<frame>.png and state_c_<channel>/<frame>.png
Saving images or states into a folder of an earlier run first removes that run's metrics files, so that a stopped
run never leaves its images beside another run's metrics; a folder that holds an earlier run's images or states is
refused (their clips and the new metrics would disagree): choose another --output-path, or move them away.
Ctrl-C or SIGTERM writes no metrics and exits with status 130 or 143.

Example (after README's first command):
    python validate.py --dataset-name synthetic --model-checkpoint checkpoint/demo/epoch-0-iter-800.pth \
        --output-path output/demo --seq-length 8 --resolution 64
"""
import argparse
import contextlib
import csv
import io
import json
import os
import re
import time

import torch
from PIL import Image
from torch.utils.data import DataLoader
from tqdm import tqdm

import metrics
from atomic_file import atomic_write, check_output_folder, write_together
from cpu_threads import CPU_THREADS_HELP, FreeCoreThreads, thread_count_flag
from data_path import DATASETS
from dataset import make_dataset
from devices import PRECISIONS, autocast_dtype, open_device, reuse_freed_cpu_memory
from errors import UserError, leave_stop_signals_to_the_main_process, run_main
from images import green_screen_composite
from input_paths import inside, refuse_outputs_over_inputs, same_path
from model import BACKBONES, MattingBase
from model.fold_batchnorm import prepare_for_inference
from model.model import matte_chunk
from model.refiner import REFINE_MODES
from model.utils import check_finite_output, load_checkpoint_model

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument('--dataset-name', required=True, choices=DATASETS, help='dataset to validate on')
parser.add_argument('--split', default='valid', choices=('valid', 'test'),
                    help='valid (for choosing settings), or test (held out: for final numbers only)')
parser.add_argument('--synthetic-clips', type=int, default=None,
                    help='clips of the synthetic split to use (default: all 32, of 40 frames each)')
parser.add_argument('--camouflage-strength', type=float, default=1.0,
                    help='synthetic-camouflage: how much of the figures\' plain appearance the texture hides, 0..1 '
                         '(default 1: all of it)')
parser.add_argument('--videomatte-root', help='override the dataset folder of data_path.py')
parser.add_argument('--backgrounds-root', help='override the background image folder of data_path.py')
parser.add_argument('--model-backbone', choices=BACKBONES,
                    help="encoder (default: the checkpoint's; a contradicting value is an error)")
parser.add_argument('--model-checkpoint', required=True, help='checkpoint file (training checkpoint or state dict)')
parser.add_argument('--without-convlstm', action='store_true', default=None,
                    help="run the ablation: ConvLSTM states zero at every frame (default: as the checkpoint was "
                         "trained)")
parser.add_argument('--model-refine', action='store_true', default=None,
                    help='MattingRefine: the network at --refine-backbone-scale, the refiner at the frames\' full '
                         'size (default: as the checkpoint was trained; needs a checkpoint with a trained refiner)')
parser.add_argument('--refine-backbone-scale', type=float, default=0.25,
                    help='scale the network of MattingRefine runs at, in (0, 0.5]')
parser.add_argument('--refine-mode', default='sampling', choices=REFINE_MODES, help='which 4x4 patches to refine')
parser.add_argument('--refine-sample-pixels', type=int, default=80_000, help="pixels refined in 'sampling' mode")
parser.add_argument('--refine-threshold', type=float, default=0.1, help="error threshold in 'thresholding' mode")
parser.add_argument('--downsample-ratio', type=float, default=1.0,
                    help='run MattingBase at this fraction of the frame size and upsample its alpha and foreground, '
                         'as inference.py does (metrics at the full size)')
parser.add_argument('--output-path', required=True, help='folder for metrics.json, metrics.csv and saved images')
parser.add_argument('--seq-length', type=int, default=8, help='frames per forward call')
parser.add_argument('--reset-state-every', type=int, default=0,
                    help='reset the ConvLSTM state every N frames of a clip; 0 carries it through the whole clip')
parser.add_argument('--resolution', type=int, default=None,
                    help='resize frames so the shorter side is this many pixels and centre-crop them square '
                         '(default: frames at their own size; the synthetic datasets draw them at this size, 128 '
                         'by default)')
parser.add_argument('--background-image-id', type=int, default=None,
                    help='composite every clip onto this background image (index into the sorted valid backgrounds)')
parser.add_argument('--num-workers', type=int, default=0, help='DataLoader worker processes')
parser.add_argument('--cpu-threads', type=thread_count_flag, default='auto', help=CPU_THREADS_HELP)
parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu',
                    help='torch device (default: cuda when present)')
parser.add_argument('--precision', choices=PRECISIONS, default='fp32',
                    help="arithmetic of the network, as inference.py's --precision: fp32 (the default, the exact "
                         "path), or auto, bf16 or fp16 to measure what mixed precision does to the metrics")
parser.add_argument('--save-images', action='store_true',
                    help='save pred_pha, true_pha, pred_err, true_src and the composite onto green as PNGs')
parser.add_argument('--save-states', action='store_true',
                    help='save each channel of the hidden (h) and cell (c) state of --state-module over time as PNGs')
parser.add_argument('--state-module', type=int, default=3, choices=(1, 2, 3),
                    help='which ConvLSTM --save-states saves: 1 at 1/8, 2 at 1/4, 3 at 1/2 resolution')

METRICS_FILES = ('metrics.json', 'metrics.csv')
IMAGE_FOLDERS = ('pred_pha', 'true_pha', 'pred_err', 'true_src', 'pred_com')  # of each clip, by --save-images
STATE_FOLDER = re.compile(r'state_[hc]_\d+')  # of each clip, by --save-states


def main(argv: list[str] | None = None) -> None:
    args = parser.parse_args(argv)
    run_main(lambda: validate(args), 'no metrics written')


def validate(args: argparse.Namespace) -> None:
    bad_clips = args.synthetic_clips is not None and args.synthetic_clips < 1
    if args.seq_length < 1 or args.reset_state_every < 0 or args.num_workers < 0 or bad_clips:
        raise UserError('--seq-length and --synthetic-clips must be at least 1, --reset-state-every and --num-workers '
                        'at least 0')
    if not 0 < args.downsample_ratio <= 1 or not 0 < args.refine_backbone_scale <= 0.5:
        raise UserError('--downsample-ratio must be in (0, 1] and --refine-backbone-scale in (0, 0.5]')
    check_output_folder(args.output_path, '--output-path')
    device = open_device(args.device)
    reuse_freed_cpu_memory(device)
    threads = FreeCoreThreads(device, args.cpu_threads)
    dtype = autocast_dtype(args.precision, device)
    dataset = make_dataset(args.dataset_name, args.split, args.seq_length, args.resolution,
                           background_image_id=args.background_image_id, videomatte_root=args.videomatte_root,
                           backgrounds_root=args.backgrounds_root, synthetic_clips=args.synthetic_clips,
                           camouflage_strength=(args.camouflage_strength, args.camouflage_strength))
    check_outputs(args, dataset)
    model = load_model(args, device)
    # fp32 runs the model exactly as trained, so that published numbers reproduce; mixed precision runs it as
    # inference.py does (BatchNorm folded), to measure what inference.py's default does to the metrics.
    if dtype is not None:
        model = prepare_for_inference(model, device)
    if args.save_images or args.save_states:
        remove_earlier_metrics(args.output_path)

    rows, model_seconds = [], 0.0
    state, previous_clip, previous = None, None, None
    loader = DataLoader(dataset, batch_size=1, shuffle=False, num_workers=args.num_workers,
                        worker_init_fn=leave_stop_signals_to_the_main_process)
    total = sum(min(args.seq_length, len(dataset.frames[c]) - s) for c, s in dataset.index)
    with torch.no_grad(), tqdm(total=total, desc='validation', unit='frame', dynamic_ncols=True) as progress:
        for (clip_index, start), (true_fgr, true_pha, true_bgr) in zip(dataset.index, loader):
            if clip_index != previous_clip:
                state, previous_clip, previous = None, clip_index, None
            clip = dataset.clips[clip_index]
            true_fgr, true_pha, true_bgr = true_fgr.to(device), true_pha.to(device), true_bgr.to(device)
            true_src = true_fgr * true_pha + true_bgr * (1 - true_pha)
            for begin, end in pieces(start, true_src.shape[1], args.reset_state_every, args.save_states):
                if args.reset_state_every and begin % args.reset_state_every == 0:
                    state = None
                started = time.perf_counter()
                with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                    pred_pha, pred_fgr, pred_err, state = matte_chunk(model, true_src[:, begin - start:end - start],
                                                                      state, args.downsample_ratio)
                if device.type == 'cuda':
                    torch.cuda.synchronize(device)
                model_seconds += time.perf_counter() - started
                check_finite_output(args.model_checkpoint, pred_pha, pred_fgr, pred_err)
                for t, frame in enumerate(range(begin, end)):
                    pha, truth = pred_pha[0, t, 0].float(), true_pha[0, frame - start, 0]
                    values = metrics.frame_metrics(pha, truth, *(previous or (None, None)))
                    values['fgr_MSE'] = metrics.fgr_mse(pred_fgr[0, t].float(), true_fgr[0, frame - start], truth)
                    rows.append({'clip': clip, 'frame': frame, **values})
                    previous = (pha, truth)
                    if args.save_images:
                        save_images(os.path.join(args.output_path, clip), frame, true_src[0, frame - start],
                                    truth, pha, pred_fgr[0, t], pred_err[0, t, 0])
                if args.save_states:
                    save_state(os.path.join(args.output_path, clip), begin, state[args.state_module - 1])
                progress.update(end - begin)
                threads.update()
    summary = write_metrics(args, rows, len(rows) / model_seconds)
    print_summary(summary)
    print(f"{summary['frames_per_second']:.2f} frames/s (the model's forward calls only)")


def check_outputs(args: argparse.Namespace, dataset) -> None:
    """UserError when what this run writes in --output-path (the metrics files, and each clip's folder of images)
    would overwrite an input (the checkpoint, the data), and when --output-path holds an earlier run's images or
    states, which the new metrics would not describe."""
    saves = args.save_images or args.save_states
    refuse_outputs_over_inputs(
        {'--model-checkpoint': args.model_checkpoint},
        [os.path.join(args.output_path, name) for name in METRICS_FILES]
        + [os.path.join(args.output_path, clip) for clip in dataset.clips if saves], 'choose another --output-path')
    for folder in (getattr(dataset, 'videomatte_dir', None), getattr(dataset, 'background_dir', None)):
        if folder and (same_path(args.output_path, folder) or inside(args.output_path, folder)):
            raise UserError(f'--output-path {args.output_path} lies in {folder}, which holds the data this run '
                            f'reads: choose another --output-path')
    earlier = earlier_images(args.output_path)
    if earlier:
        shown = ', '.join(os.path.join(args.output_path, clip) for clip in earlier[:3])
        raise UserError(f'--output-path {args.output_path} holds the images of an earlier run ({shown}'
                        f'{" ..." if len(earlier) > 3 else ""}), which this run\'s metrics would not describe: choose '
                        f'another --output-path, or move those folders away')


def earlier_images(folder: str) -> list[str]:
    """The clip folders in `folder` that hold images or states of a validation run, sorted."""
    if not os.path.isdir(folder):
        return []
    clips = []
    for entry in os.scandir(folder):
        with contextlib.suppress(OSError):  # not a folder, or one this user cannot read: not a validation run's
            if any(sub.is_dir() and (sub.name in IMAGE_FOLDERS or STATE_FOLDER.fullmatch(sub.name))
                   for sub in os.scandir(entry.path)):
                clips.append(entry.name)
    return sorted(clips)


def load_model(args: argparse.Namespace, device: torch.device) -> MattingBase:
    """The checkpoint's model in eval mode on `device`, with the settings it records. They are resolved into args,
    so that metrics.json records the model that was validated."""
    model = load_checkpoint_model(args)
    if args.model_refine and args.downsample_ratio != 1:
        raise UserError('--model-refine sets its own scale: use --refine-backbone-scale, not --downsample-ratio')
    return model.eval().to(device)


def pieces(start: int, length: int, reset_every: int, single_frames: bool) -> list[tuple[int, int]]:
    """Split the frames [start, start + length) of a chunk into pieces run by one forward call each: a piece never
    crosses a state reset, and with single_frames each frame is its own piece (to record its state)."""
    bounds = {start, start + length}
    for frame in range(start + 1, start + length):
        if single_frames or (reset_every and frame % reset_every == 0):
            bounds.add(frame)
    bounds = sorted(bounds)
    return list(zip(bounds[:-1], bounds[1:]))


def write_metrics(args: argparse.Namespace, rows: list[dict], frames_per_second: float) -> dict:
    """metrics.csv (one row per frame) and metrics.json (settings, frames/s of the model, overall mean, per clip
    mean and frames)."""
    names = [name for name in rows[0] if name not in ('clip', 'frame')]
    clips = {}
    for row in rows:
        clips.setdefault(row['clip'], []).append(row)
    summary = {
        'settings': vars(args),
        'frames': len(rows),
        'frames_per_second': frames_per_second,
        'mean': mean_metrics(rows, names),
        'clips': {clip: {'mean': mean_metrics(clip_rows, names),
                         'frames': [{key: value for key, value in row.items() if key != 'clip'} for row in clip_rows]}
                  for clip, clip_rows in clips.items()},
    }
    table = io.StringIO(newline='')
    writer = csv.DictWriter(table, fieldnames=['clip', 'frame', *names])
    writer.writeheader()
    writer.writerows(rows)
    # Together, so that a failure (a full disk) never leaves one file of this run beside one of an earlier run.
    json_path, csv_path = (os.path.join(args.output_path, name) for name in METRICS_FILES)
    write_together({json_path: json.dumps(summary, indent=2).encode(), csv_path: table.getvalue().encode()})
    return summary


def remove_earlier_metrics(folder: str) -> None:
    """Remove an earlier run's metrics files from `folder`, where this run is about to write images: a run that is
    stopped must not leave its images beside another run's metrics."""
    for name in METRICS_FILES:
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(folder, name))


def mean_metrics(rows: list[dict], names: list[str]) -> dict:
    """Mean of each metric over the rows where it is defined (dtSSD is None on a clip's first frame)."""
    means = {}
    for name in names:
        values = [row[name] for row in rows if row[name] is not None]
        means[name] = sum(values) / len(values) if values else None
    return means


def print_summary(summary: dict) -> None:
    names = list(summary['mean'])
    print(f"{'clip':<24}" + ''.join(f'{name:>10}' for name in names))
    for clip, result in [*summary['clips'].items(), ('all frames', summary)]:
        print(f'{clip:<24}' + ''.join(format_value(result['mean'][name]) for name in names))


def format_value(value: float | None) -> str:
    return f'{value:>10.3f}' if value is not None else f"{'-':>10}"


def save_images(folder: str, frame: int, true_src: torch.Tensor, true_pha: torch.Tensor, pred_pha: torch.Tensor,
                pred_fgr: torch.Tensor, pred_err: torch.Tensor) -> None:
    """One frame's images: src/fgr (3, H, W), mattes (H, W), all in 0..1."""
    images = dict(zip(IMAGE_FOLDERS, (pred_pha, true_pha, pred_err, true_src,
                                      green_screen_composite(pred_fgr, pred_pha))))
    for name, image in images.items():
        save_png(os.path.join(folder, name, f'{frame:06d}.png'), image)


def save_state(folder: str, frame: int, state: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Each channel of one ConvLSTM's (h, c) after `frame`, as grey PNGs: h in -1..1 and tanh(c) mapped to 0..1."""
    h, c = state
    for kind, values in (('h', h[0]), ('c', torch.tanh(c[0]))):
        for channel, image in enumerate((values.float() + 1) / 2):
            save_png(os.path.join(folder, f'state_{kind}_{channel}', f'{frame:06d}.png'), image)


def save_png(path: str, image: torch.Tensor) -> None:
    """image (H, W) or (3, H, W) in 0..1 -> 8-bit PNG, written atomically."""
    array = (image.detach().float().clamp(0, 1) * 255).round().byte().cpu()
    array = array.permute(1, 2, 0).numpy() if array.dim() == 3 else array.numpy()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format='PNG')
    with atomic_write(path) as file:
        file.write(buffer.getvalue())


if __name__ == '__main__':
    main()
