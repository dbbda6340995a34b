"""Every benchmark that needs a GPU, in one run of at most 8 minutes on one GPU, each result written as JSON named
after the device: benchmarks/results/<device>-<name>.json.

    python benchmarks/gpu.py                                       on the GPU machine
    python benchmarks/gpu.py --tiny --device cpu --results-dir /tmp/x   tiny sizes on any machine (the test suite's
                                                                   check that it still runs)

The parts, each a subprocess with a time limit (a part that fails is reported and the others still run):
    loader        bench_loader.py at 1, 4 and 12 workers: today's loader against the device path (uint8 from the
                  workers, finished on the GPU), 224x224, batch 4, 8 frames, from 1920x1080 JPEG clips
    train-loop    train.py for --train-seconds at 224x224, batch 4, 8 frames, AMP, 12 workers, MobileNetV2, on
                  generated 1920x1080 JPEG clips, stopped by SIGINT as a user would: steps/s, clips/s and the
                  data-wait share (train/data_wait_share of its TensorBoard log), the first --warmup-steps left out
    train         bench_train.py, the three backbones at 224x224, batch 4, 8 frames, fp32 and AMP
    inference     bench_inference.py, the three backbones at 512x288 and (--hd) 1920x1080
--tiny shrinks every size (frames, crops, steps, backbones) so that the whole run takes about a minute on a CPU.
Prints where each result went; exits 1 when a part failed. Ctrl-C or SIGTERM stops the running part too and exits
with 130 or 143, the results written so far kept.
"""
import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from common import REPO  # first: it puts the repository on the import path
from atomic_file import atomic_write  # noqa: I100
from dataset.synthetic import generate
from devices import DeviceError, device_name, open_device
from errors import run_main

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu', help='torch device')
parser.add_argument('--results-dir', default=os.path.join(REPO, 'benchmarks', 'results'),
                    help='where the JSON files go')
parser.add_argument('--parts', nargs='+', default=['loader', 'train-loop', 'train', 'inference'],
                    choices=['loader', 'train-loop', 'train', 'inference'], help='what to run')
parser.add_argument('--train-seconds', type=float, default=45, help='train-loop: seconds of training')
parser.add_argument('--warmup-steps', type=int, default=20, help='train-loop: first steps left out of the figures')
parser.add_argument('--tiny', action='store_true', help='tiny sizes, to check on a CPU that everything runs')

BACKBONES = ['mobilenetv2', 'resnet50', 'resnet101']


def main() -> None:
    args = parser.parse_args()
    run_main(lambda: run_parts(args), 'the running part is stopped; the results written so far are kept')


def run_parts(args: argparse.Namespace) -> None:
    try:
        device = open_device(args.device)
    except DeviceError as error:
        sys.exit(f'error: {error}')
    if args.train_seconds <= 0 or args.warmup_steps < 0:
        sys.exit('error: --train-seconds must be above 0 and --warmup-steps 0 or more')
    prefix = os.path.join(args.results_dir, device_slug(device))
    args.deadline = time.monotonic() + BUDGET_SECONDS
    failed = []
    started = time.perf_counter()
    for part in args.parts:
        try:
            result = PARTS[part](args, device)
        except PartError as error:
            print(f'error: {part}: {error}', file=sys.stderr)
            failed.append(part)
            continue
        path = f'{prefix}-{part}.json'
        with atomic_write(path, 'w') as file:
            json.dump(result, file, indent=2)
            file.write('\n')
        print(f'{part}: {path} ({time.perf_counter() - started:.0f} s so far)')
    if failed:
        sys.exit(f"error: {', '.join(failed)} failed (see above); the other results are written")


# The whole run's limit: each part gets its own limit or what is left of this, whichever is less.
BUDGET_SECONDS = 480


class PartError(Exception):
    """A part that did not give its result: the message says why."""


def device_slug(device: torch.device) -> str:
    """The device as benchmarks/results/ names files: 'nvidia-h100-80gb-hbm3' for an NVIDIA H100 80GB HBM3,
    'cpu-amd-epyc-2core' for a 2-core AMD EPYC."""
    name = re.sub(r', (\d+) cores$', r' \1core', device_name(device))
    slug = re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')
    return f'cpu-{slug}' if device.type == 'cpu' else slug


def time_left(args: argparse.Namespace, limit: float) -> float:
    """Seconds a part may take: `limit`, or what is left of the run's BUDGET_SECONDS if less; PartError if none."""
    left = args.deadline - time.monotonic()
    if left <= 0:
        raise PartError(f'no time left of the run\'s {BUDGET_SECONDS} s')
    return min(limit, left)


def run_benchmark(script: str, arguments: list[str], timeout: float) -> dict:
    """The JSON object a benchmark script prints; PartError if it fails or runs past `timeout` seconds."""
    command = [sys.executable, os.path.join(REPO, 'benchmarks', script), *arguments]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    except subprocess.TimeoutExpired:
        raise PartError(f'{script} ran past {timeout:.0f} s') from None
    if result.returncode != 0:
        raise PartError(f'{script} exited with {result.returncode}: {result.stderr.strip()[-2000:]}')
    return json.loads(result.stdout)


def loader_part(args: argparse.Namespace, device: torch.device) -> dict:
    sizes = (['--width', '96', '--height', '54', '--clips', '2', '--frames', '8', '--resolution', '32',
              '--seq-length', '3', '--batch-size', '2', '--workers', '0', '1', '--runs', '1'] if args.tiny else
             ['--workers', '1', '4', '12', '--runs', '3'])
    return run_benchmark('bench_loader.py', [*sizes, '--loaders', 'today', 'device path', '--device', args.device],
                         timeout=time_left(args, 140))


def train_part(args: argparse.Namespace, device: torch.device) -> dict:
    sizes = (['--backbones', 'mobilenetv2', '--resolution', '32', '--batch-size', '2', '--seq-length', '2',
              '--variants', 'fp32', '--runs', '1'] if args.tiny else
             ['--backbones', *BACKBONES, '--resolution', '224', '--batch-size', '4', '--seq-length', '8',
              '--variants', 'fp32', 'bf16', '--runs', '5'])
    return run_benchmark('bench_train.py', [*sizes, '--device', args.device], timeout=time_left(args, 90))


def inference_part(args: argparse.Namespace, device: torch.device) -> dict:
    sizes = (['--backbones', 'mobilenetv2', '--width', '64', '--height', '64', '--chunk', '2', '--chunks', '1',
              '--runs', '1'] if args.tiny else ['--backbones', *BACKBONES, '--hd', '--runs', '3'])
    return run_benchmark('bench_inference.py', [*sizes, '--device', args.device], timeout=time_left(args, 160))


def train_loop_part(args: argparse.Namespace, device: torch.device) -> dict:
    """train.py on generated clips for --train-seconds after its first step, then SIGINT; figures from its log."""
    resolution, batch_size, seq_length, workers = (32, 2, 3, 1) if args.tiny else (224, 4, 8, 12)
    with tempfile.TemporaryDirectory() as folder:
        root = os.path.join(folder, 'data')
        write_long_clips(root, args.tiny)
        log_dir = os.path.join(folder, 'log')
        command = [sys.executable, os.path.join(REPO, 'train.py'), '--dataset-name', 'videomatte240k',
                   '--videomatte-root', root, '--backgrounds-root', os.path.join(root, 'backgrounds'),
                   '--model-backbone', 'mobilenetv2', '--model-name', 'gpu-benchmark',
                   '--resolution', str(resolution), '--batch-size', str(batch_size), '--seq-length', str(seq_length),
                   '--num-workers', str(workers), '--amp' if device.type == 'cuda' else '--no-amp',
                   '--log-valid-interval', '0', '--log-train-images-interval', '1000000',
                   '--checkpoint-interval', '1000000', '--keep-checkpoints', '1',
                   '--checkpoint-dir', os.path.join(folder, 'checkpoint'), '--log-dir', log_dir,
                   '--device', args.device]
        with open(os.path.join(folder, 'train.log'), 'w+') as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
            try:
                train_for(process, log_dir, args.train_seconds, time_left(args, 300 + args.train_seconds))
            finally:
                stop(process)
            log.seek(0)
            output = log.read()
        if process.returncode != 128 + signal.SIGINT:
            raise PartError(f'train.py exited with {process.returncode}: {output.strip()[-2000:]}')
        shares, times = logged_scalars(log_dir, 'train/data_wait_share'), logged_wall_times(log_dir)
    steps = sorted(step for step in times if step > args.warmup_steps)
    if len(steps) < 2:
        raise PartError(f'train.py logged {len(times)} steps in {args.train_seconds} s, not more than '
                        f'--warmup-steps {args.warmup_steps}')
    seconds = times[steps[-1]] - times[steps[0]]
    steady_shares = [shares[step] for step in steps[1:] if step in shares]
    return {
        'benchmark': 'train-loop', 'device': device_name(device), 'torch': torch.__version__,
        'command': 'python benchmarks/gpu.py ' + ' '.join(sys.argv[1:]), 'train.py': command[1:],
        'settings': {'resolution': resolution, 'batch_size': batch_size, 'seq_length': seq_length,
                     'num_workers': workers, 'amp': device.type == 'cuda', 'backbone': 'mobilenetv2',
                     'frames': '96x54 JPEG' if args.tiny else '1920x1080 JPEG', 'train_seconds': args.train_seconds,
                     'warmup_steps': args.warmup_steps, 'cpus': os.cpu_count()},
        'results': {'steps_timed': len(steps) - 1, 'steps_per_second': round((len(steps) - 1) / seconds, 3),
                    'clips_per_second': round((len(steps) - 1) * batch_size / seconds, 3),
                    'data_wait_share_mean': round(statistics.mean(steady_shares), 4),
                    'data_wait_share_median': round(statistics.median(steady_shares), 4)}}


def write_long_clips(root: str, tiny: bool) -> None:
    """A VideoMatte-layout dataset whose training clips are long (1600 frames: epochs of 400 batches of 4, so that
    epoch ends and their checkpoints are rare), written fast: 24 frames generated per clip, the rest hard links to
    them in a loop (the loader only reads them; the motion between frames does not matter to its speed)."""
    width, height, frames, length = (96, 54, 8, 48) if tiny else (1920, 1080, 24, 1600)
    generate(root, width=width, height=height, frames=frames, train_clips=4, valid_clips=1, train_backgrounds=4,
             valid_backgrounds=1)
    for part in ('fgr', 'pha'):
        part_dir = os.path.join(root, 'train', part)
        for clip in os.listdir(part_dir):
            clip_dir = os.path.join(part_dir, clip)
            names = sorted(os.listdir(clip_dir))
            extension = os.path.splitext(names[0])[1]
            for index in range(len(names), length):
                source = os.path.join(clip_dir, names[index % len(names)])
                target = os.path.join(clip_dir, f'{index:05d}{extension}')
                try:
                    os.link(source, target)
                except OSError:  # a file system without hard links
                    shutil.copyfile(source, target)


def train_for(process: subprocess.Popen, log_dir: str, seconds: float, limit: float) -> None:
    """Wait until train.py has logged its first step, let it train `seconds`, then SIGINT it and wait for its exit
    (it saves a checkpoint and exits with 130). Returns early if it ends, or logs nothing before `limit` seconds
    less `seconds` have passed."""
    deadline = time.monotonic() + limit - seconds
    while not logged_wall_times(log_dir):
        if process.poll() is not None or time.monotonic() > deadline:
            return
        time.sleep(0.5)
    time.sleep(seconds)
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        raise PartError('train.py did not stop within 120 s of SIGINT') from None


def stop(process: subprocess.Popen) -> None:
    """Stop train.py if it still runs: SIGINT first, so that it stops its DataLoader workers too; SIGKILL if it
    has not ended 30 s later."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def logged_scalars(log_dir: str, tag: str) -> dict[int, float]:
    """step -> value of a scalar in the TensorBoard event files of log_dir."""
    return {event.step: event.value for event in scalar_events(log_dir, tag)}


def logged_wall_times(log_dir: str) -> dict[int, float]:
    """step -> wall time at which train.py logged that step's loss."""
    return {event.step: event.wall_time for event in scalar_events(log_dir, 'train/loss_total')}


def scalar_events(log_dir: str, tag: str) -> list:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = []
    for name in sorted(os.listdir(log_dir)) if os.path.isdir(log_dir) else []:
        accumulator = EventAccumulator(os.path.join(log_dir, name), size_guidance={'scalars': 0})
        accumulator.Reload()
        if tag in accumulator.Tags()['scalars']:
            events.extend(accumulator.Scalars(tag))
    return events


PARTS = {'loader': loader_part, 'train-loop': train_loop_part, 'train': train_part, 'inference': inference_part}

if __name__ == '__main__':
    main()
