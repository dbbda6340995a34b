r"""Matte your own video (any format OpenCV reads) or folder of frames with a checkpoint.

    python inference.py --model-checkpoint checkpoint/demo/epoch-0-iter-800.pth \
        --input my_video.mp4 --output-dir output/my_video --output-types pha com

Frames stream through in chunks of --seq-length with the ConvLSTM state carried from chunk to chunk, so memory
does not grow with the video's length. Writes <output-dir>/{pha,fgr,com}.mp4 at the input's frame rate and size
(the mp4 encoder drops the last column or row of an odd width or height, with a warning), or with --output-format
png <output-dir>/{pha,fgr,com}/000000.png ... (com alone by default). Each output is written under a temporary
name and renamed when complete; it replaces an earlier output of the same name, never an input of the run, and a
PNG folder holding files other than its frames is refused, not deleted. High-resolution video: --downsample-ratio
runs the network at a reduced size and upsamples its alpha and foreground residual; --model-refine runs
MattingRefine (BackgroundMattingV2's refiner). Ctrl-C or SIGTERM removes the unfinished outputs and exits with
status 130 or 143.
"""
import argparse
import contextlib
import itertools
import math
import os
import re
import shutil
import sys
from collections.abc import Iterator, Sequence

import cv2
import numpy as np
import torch
from tqdm import tqdm

from atomic_file import HOST, check_output_folder, process_alive
from cpu_threads import CPU_THREADS_HELP, FreeCoreThreads, thread_count_flag
from devices import PRECISIONS, autocast_dtype, device_name, open_device, reuse_freed_cpu_memory
from errors import UserError, run_main
from images import GREEN_SCREEN, IMAGE_EXTENSIONS
from input_paths import refuse_outputs_over_inputs
from model import BACKBONES, MattingBase
from model.fold_batchnorm import prepare_for_inference
from model.model import run_model
from model.refiner import REFINE_MODES
from model.utils import NON_FINITE_ADVICE, check_finite_output, load_checkpoint_model

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument('--model-backbone', choices=BACKBONES,
                    help="encoder (default: the checkpoint's; a contradicting value is an error)")
parser.add_argument('--model-checkpoint', required=True, help='checkpoint file (training checkpoint or state dict)')
parser.add_argument('--without-convlstm', action='store_true', default=None,
                    help='ConvLSTM states zero at every frame (the ablation; default: as the checkpoint was trained)')
parser.add_argument('--input', required=True, help='a video file, or a folder of .png/.jpg frames (sorted by name)')
parser.add_argument('--fps', type=float, default=30, help='frame rate of the output when the input is a folder')
parser.add_argument('--num-frames', type=int, default=None, help='matte only the first N frames (default: all)')
parser.add_argument('--output-dir', required=True, help='folder for the outputs')
parser.add_argument('--output-types', nargs='+', default=['com'], choices=('pha', 'fgr', 'com'),
                    help='alpha, foreground, and/or composite onto --composite-background')
parser.add_argument('--output-format', default='video', choices=('video', 'png'), help='mp4 videos or PNG sequences')
parser.add_argument('--composite-background', default=','.join(map(str, GREEN_SCREEN)),
                    help="a colour 'R,G,B' or '#rrggbb', or an image file (resized to the frames)")
parser.add_argument('--seq-length', type=int, default=8, help='frames per forward call')
parser.add_argument('--downsample-ratio', type=float, default=1.0,
                    help='run MattingBase at this fraction of the frame size (e.g. 0.25 for 4K), then upsample')
parser.add_argument('--model-refine', action='store_true', default=None,
                    help='MattingRefine: the network at --refine-backbone-scale, the refiner at full resolution '
                         '(default: as the checkpoint was trained; needs a refiner trained with train.py '
                         '--model-refine)')
parser.add_argument('--refine-backbone-scale', type=float, default=0.25,
                    help='scale the base network runs at, in (0, 0.5]')
parser.add_argument('--refine-mode', default='sampling', choices=REFINE_MODES, help='which 4x4 patches to refine')
parser.add_argument('--refine-sample-pixels', type=int, default=80_000, help="pixels refined in 'sampling' mode")
parser.add_argument('--refine-threshold', type=float, default=0.1, help="error threshold in 'thresholding' mode")
parser.add_argument('--cpu-threads', type=thread_count_flag, default='auto', help=CPU_THREADS_HELP)
parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu',
                    help='torch device (default: cuda when present)')
parser.add_argument('--precision', choices=PRECISIONS, default=None,
                    help='arithmetic of the network: auto (the default) is fp16 autocast on CUDA, bf16 autocast on a '
                         'CPU with bfloat16 instructions, else fp32; fp32 is the exact path')
parser.add_argument('--fp16', action=argparse.BooleanOptionalAction, default=None,
                    help='the older spelling of --precision fp16 (--no-fp16: --precision fp32)')

FRAME_NAME = re.compile(r'\d{6,}\.png')  # the PNG frames Output writes: 000000.png ...
PRECISION_NAMES = {None: 'fp32', torch.bfloat16: 'bf16 autocast', torch.float16: 'fp16 autocast'}


class InferenceError(UserError):
    """A user input that cannot be matted: the message names it and what to do."""


def main(argv: Sequence[str] | None = None) -> None:
    args = parser.parse_args(argv)
    run_main(lambda: matte(args), 'nothing written; the earlier outputs in --output-dir are kept')


def matte(args: argparse.Namespace) -> None:
    device = open_device(args.device)
    reuse_freed_cpu_memory(device)
    threads = FreeCoreThreads(device, args.cpu_threads)
    dtype = precision_dtype(args, device)
    check_flags(args)
    check_output_folder(args.output_dir, '--output-dir')
    outputs = {kind: Output(args.output_dir, kind, args.output_format) for kind in args.output_types}
    background_file = args.composite_background if os.path.isfile(args.composite_background) else None
    refuse_outputs_over_inputs({'--input': args.input, '--model-checkpoint': args.model_checkpoint,
                                '--composite-background': background_file},
                               [path for output in outputs.values() for path in (output.path, output.temporary)],
                               'choose another --output-dir')
    for output in outputs.values():
        output.check()
    frames, fps, (width, height), count = open_input(args.input, args.fps)
    if args.num_frames is not None:
        count = min(count, args.num_frames) if count > 0 else args.num_frames
    check_downsample_ratio(args.downsample_ratio, width, height)
    if args.output_format == 'video' and min(width, height) < 2:
        raise InferenceError(f'--input {args.input} has {width}x{height} frames, too small for the mp4 encoder (2x2 '
                             f'pixels at least): use --output-format png')
    background = composite_background(args.composite_background, width, height, device)
    model = load_model(args, device)
    # fp16 can overflow where a checkpoint is fine in full precision; bf16 keeps float32's range.
    advice = NON_FINITE_ADVICE + ('; or run in full precision: --precision fp32' if dtype == torch.float16 else '')
    if args.output_format == 'video' and (width % 2 or height % 2):
        print(f'warning: the mp4 encoder needs an even width and height, so {width}x{height} frames are written as '
              f'{width // 2 * 2}x{height // 2 * 2} (the last column or row dropped); --output-format png keeps every '
              f'pixel', file=sys.stderr)
    print(f'matting on {device} ({device_name(device)}) in {PRECISION_NAMES[dtype]}')

    new_folders = missing_folders(args.output_dir)
    try:
        for output in outputs.values():
            output.open(fps, (width, height))
        state = None
        with torch.no_grad(), tqdm(total=count or None, unit='frame', dynamic_ncols=True) as progress:
            for chunk in chunks(frames, args.seq_length, args.num_frames):
                src = torch.from_numpy(np.stack(chunk)).to(device).permute(0, 3, 1, 2).float().div(255).unsqueeze(0)
                with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                    pha, fgr, state = run_model(model, src, state, args.downsample_ratio)
                pha, fgr = pha[0].float(), fgr[0].float()
                check_finite_output(args.model_checkpoint, pha, fgr, advice=advice)
                images = {'pha': pha, 'fgr': fgr, 'com': fgr * pha + background * (1 - pha)}
                for kind, output in outputs.items():
                    output.write(images[kind])
                progress.update(len(chunk))
                threads.update()
        if progress.n == 0:
            raise InferenceError(f'--input {args.input}: no frame could be read')
        for output in outputs.values():
            output.close()
        for output in outputs.values():
            output.commit()
    except BaseException:
        for output in outputs.values():
            output.discard()
        for folder in new_folders:  # those this run made, innermost first, where nothing was written
            with contextlib.suppress(OSError):
                os.rmdir(folder)
        raise
    print(f"{progress.n} frames matted into {', '.join(output.path for output in outputs.values())}")


def missing_folders(path: str) -> list[str]:
    """The folders of `path` that do not exist yet, innermost first: those a run writing there would make."""
    missing = []
    path = os.path.abspath(path)
    while not os.path.exists(path):
        missing.append(path)
        path = os.path.dirname(path)
    return missing


def precision_dtype(args: argparse.Namespace, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of --precision, or of its older spelling --fp16/--no-fp16, on `device`; None: float32.
    DeviceError where the device lacks it, InferenceError where the two flags disagree."""
    if args.fp16 is None:
        return autocast_dtype(args.precision or 'auto', device)
    alias, flag = ('fp16', '--fp16') if args.fp16 else ('fp32', '--no-fp16')
    if args.precision not in (None, alias):
        raise InferenceError(f'{flag} and --precision {args.precision} disagree: give --precision alone')
    return autocast_dtype(alias, device, flag)


def check_flags(args: argparse.Namespace) -> None:
    """InferenceError for flags that contradict each other or are out of range."""
    if args.seq_length < 1 or (args.num_frames is not None and args.num_frames < 1):
        raise InferenceError('--seq-length and --num-frames must be at least 1')
    if not 0 < args.downsample_ratio <= 1:
        raise InferenceError(f'--downsample-ratio {args.downsample_ratio}: give a value in (0, 1]')
    if not 0 < args.refine_backbone_scale <= 0.5:
        raise InferenceError(f'--refine-backbone-scale {args.refine_backbone_scale}: give a value in (0, 0.5]')
    if args.refine_sample_pixels < 1:
        raise InferenceError(f'--refine-sample-pixels {args.refine_sample_pixels}: give 1 or more pixels')
    if args.fps <= 0:
        raise InferenceError(f'--fps {args.fps}: give a frame rate above 0')


def check_downsample_ratio(ratio: float, width: int, height: int) -> None:
    """InferenceError when --downsample-ratio shrinks width x height frames to nothing; the message gives the
    smallest ratio (3 decimals) that works for them. The network itself runs on any size from 1x1."""
    # the size F.interpolate gives the reduced frames in run_model
    small_width, small_height = math.floor(width * ratio), math.floor(height * ratio)
    if min(small_width, small_height) < 1:
        smallest = math.ceil(1000 / min(width, height)) / 1000
        raise InferenceError(f'--downsample-ratio {ratio} shrinks the {width}x{height} frames to '
                             f'{small_width}x{small_height}, too small for the network: use {smallest} or more')


def load_model(args: argparse.Namespace, device: torch.device) -> MattingBase:
    model = load_checkpoint_model(args)
    if args.model_refine and args.downsample_ratio != 1:
        raise InferenceError('--model-refine sets its own scale: use --refine-backbone-scale, not --downsample-ratio')
    return prepare_for_inference(model, device)


def open_input(path: str, folder_fps: float) -> tuple[Iterator[np.ndarray], float, tuple[int, int], int]:
    """(RGB uint8 frames (H, W, 3), read lazily; frame rate; (width, height); frame count, 0 when the container
    does not tell) of a video file or a frame folder."""
    if os.path.isdir(path):
        names = sorted(name for name in os.listdir(path) if name.lower().endswith(IMAGE_EXTENSIONS))
        if not names:
            raise InferenceError(f'--input {path} holds no {"/".join(IMAGE_EXTENSIONS)} images')
        first = read_image(os.path.join(path, names[0]))
        frames = (read_image(os.path.join(path, name), first.shape) for name in names)
        return frames, folder_fps, (first.shape[1], first.shape[0]), len(names)
    if not os.path.isfile(path):
        raise InferenceError(f'--input {path} does not exist: give a video file or a folder of frames')
    capture = cv2.VideoCapture(path)
    width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    if not capture.isOpened() or width == 0 or height == 0:
        raise InferenceError(f'--input {path} cannot be read as a video: convert it to mp4 or extract its frames')
    fps = capture.get(cv2.CAP_PROP_FPS) or folder_fps
    return read_video(capture), fps, (width, height), max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0)


def read_video(capture: cv2.VideoCapture) -> Iterator[np.ndarray]:
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()


def read_image(path: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """An RGB uint8 frame (H, W, 3); InferenceError if it cannot be decoded or its size differs from `shape`."""
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise InferenceError(f'{path} cannot be decoded as an image: replace or remove it')
    if shape is not None and image.shape != shape:
        raise InferenceError(f'{path} is {image.shape[1]}x{image.shape[0]}, the first frame {shape[1]}x{shape[0]}: '
                             f'all frames of a folder must have one size')
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def chunks(frames: Iterator[np.ndarray], size: int, limit: int | None) -> Iterator[list[np.ndarray]]:
    """Lists of up to `size` consecutive frames, `limit` frames in all (None: until the input ends), each read
    only when its chunk is asked for."""
    frames = itertools.islice(frames, limit)
    while chunk := list(itertools.islice(frames, size)):
        yield chunk


def composite_background(spec: str, width: int, height: int, device: torch.device) -> torch.Tensor:
    """(3, H, W) or (3, 1, 1) in 0..1 from 'R,G,B', '#rrggbb' or an image file."""
    if os.path.isfile(spec):
        image = cv2.resize(read_image(spec), (width, height), interpolation=cv2.INTER_AREA)
        return torch.from_numpy(image).to(device).permute(2, 0, 1).float().div(255)
    try:
        rgb = ([int(spec[i:i + 2], 16) for i in (1, 3, 5)] if spec.startswith('#') and len(spec) == 7
               else [int(value) for value in spec.split(',')])
    except ValueError:
        rgb = []
    if len(rgb) != 3 or not all(0 <= value <= 255 for value in rgb):
        raise InferenceError(f"--composite-background {spec}: give 'R,G,B' (0-255), '#rrggbb' or an image file")
    return torch.tensor(rgb, device=device, dtype=torch.float32).div(255).view(3, 1, 1)


class Output:
    """One output (pha, fgr or com) written under a temporary name: open() starts it, close() finishes and checks it,
    commit() puts it in place of an earlier output of that name, discard() removes it. Video: <dir>/<kind>.mp4
    (MPEG-4 Part 2, 'mp4v': the codec every OpenCV build writes); PNG: <dir>/<kind>/000000.png ... (alpha as 8-bit
    grey, the others RGB)."""

    def __init__(self, folder: str, kind: str, output_format: str):
        self.folder = folder
        self.is_video = output_format == 'video'
        self.path = os.path.join(folder, f'{kind}.mp4' if self.is_video else kind)
        # Named by process and host, so that runs sharing --output-dir never write into each other's temporaries.
        suffix = '.mp4' if self.is_video else ''
        self.temporary = os.path.join(folder, f'.{kind}.{os.getpid()}@{HOST}.partial{suffix}')
        self.temporary_name = re.compile(rf'\.{kind}\.(\d+)@(.+)\.partial{re.escape(suffix)}')
        self.frames = 0
        self.video = None
        self.opened = False

    def check(self) -> None:
        """InferenceError unless what is at the output's path, if anything, is an earlier output of its kind: a
        folder where the video goes, a file where the PNG folder goes, and a PNG folder holding anything but frames
        (whatever else it holds would go with the earlier frames) are refused."""
        if self.is_video and os.path.isdir(self.path):
            raise InferenceError(f'{self.path} is a folder, where the video goes: move it away or choose another '
                                 f'--output-dir')
        if self.is_video or not os.path.lexists(self.path):
            return
        if not os.path.isdir(self.path) or os.path.islink(self.path):
            raise InferenceError(f'{self.path} is a file, where the PNG frames go: move it away or choose another '
                                 f'--output-dir')
        foreign = sorted(name for name in os.listdir(self.path)
                         if not (FRAME_NAME.fullmatch(name) and os.path.isfile(os.path.join(self.path, name))))
        if foreign:
            raise InferenceError(f'{self.path} holds {", ".join(foreign[:3])}{" ..." if len(foreign) > 3 else ""}, '
                                 f'which inference.py did not write; the earlier frames there would be replaced: '
                                 f'move those away or choose another --output-dir')

    def open(self, fps: float, size: tuple[int, int]) -> None:
        os.makedirs(self.folder, exist_ok=True)
        self.opened = True
        self.remove_stale_temporaries()
        if self.is_video:
            self.video = cv2.VideoWriter(self.temporary, cv2.VideoWriter_fourcc(*'mp4v'), fps, size)
            if not self.video.isOpened():
                raise InferenceError(f'cannot write the video {self.temporary}: check the folder is writable')
        else:
            shutil.rmtree(self.temporary, ignore_errors=True)
            os.makedirs(self.temporary)

    def remove_stale_temporaries(self) -> None:
        """Remove the temporaries of this output that killed runs of this machine left; another live run's stay."""
        for name in os.listdir(self.folder):
            match = self.temporary_name.fullmatch(name)
            if match and match[2] == HOST and not process_alive(int(match[1])):
                path = os.path.join(self.folder, name)
                if os.path.isdir(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(path)

    def write(self, images: torch.Tensor) -> None:
        """images (T, 1 or 3, H, W) in 0..1."""
        for image in (images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy():
            image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.shape[2] == 3 else image[..., 0]
            if self.video is not None:
                # write() returns False when the encoder fails (None in OpenCV versions that do not tell)
                if self.video.write(image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)) is False:
                    raise InferenceError(f'cannot write {self.path}: check the free disk space')
            elif not cv2.imwrite(os.path.join(self.temporary, f'{self.frames:06d}.png'), image):
                raise InferenceError(f'cannot write {self.temporary}/{self.frames:06d}.png: check the free disk space')
            self.frames += 1

    def close(self) -> None:
        """Finish the video; InferenceError naming it unless it reads back with every frame written (a full disk
        leaves a video without its index, which OpenCV reads as 0 frames)."""
        if self.video is None:
            return
        self.video.release()
        found = video_frame_count(self.temporary)
        if found != self.frames:
            raise InferenceError(f'cannot write {self.path}: the finished video reads back {found} of its '
                                 f'{self.frames} frames; check the free disk space')

    def commit(self) -> None:
        """Rename the output into place. An earlier PNG folder loses only the frames inference.py writes, and only
        once the new one is in place; were anything else put there since check(), nothing is replaced and
        InferenceError says so."""
        if self.video is not None:
            os.replace(self.temporary, self.path)
            return
        if not os.path.isdir(self.path):
            os.rename(self.temporary, self.path)
            return
        if any(not FRAME_NAME.fullmatch(name) for name in os.listdir(self.path)):
            raise InferenceError(f'{self.path} gained other files than frames during the run: move them away and '
                                 f'run again')
        earlier = f'{self.temporary}.earlier'
        os.rename(self.path, earlier)
        os.rename(self.temporary, self.path)
        for name in os.listdir(earlier):
            if FRAME_NAME.fullmatch(name):
                os.remove(os.path.join(earlier, name))
        try:
            os.rmdir(earlier)
        except OSError:
            raise InferenceError(f'{self.path} gained other files than frames during the run: they are kept in '
                                 f'{earlier}') from None

    def discard(self) -> None:
        if not self.opened:
            return
        if self.video is not None:
            self.video.release()
            if os.path.exists(self.temporary):
                os.remove(self.temporary)
        else:
            shutil.rmtree(self.temporary, ignore_errors=True)


def video_frame_count(path: str) -> int:
    """The number of frames of the video file `path` as its container tells, or 0 when it cannot be opened or its
    last frame cannot be read."""
    capture = cv2.VideoCapture(path)
    try:
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
        capture.set(cv2.CAP_PROP_POS_FRAMES, count - 1)
        return count if count > 0 and capture.grab() else 0
    finally:
        capture.release()


if __name__ == '__main__':
    main()
