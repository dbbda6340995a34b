"""Training loader: clips/s in the steady state, worker and main-process CPU per clip, bytes per clip and threads per
worker, of today's loader against dataset/loader.py's TrainLoader, on the same HD JPEG clips.

Writes synthetic clips (--width x --height JPEG frames and backgrounds, dataset.synthetic.generate) to a temporary
folder and loads the training split (make_dataset's train preset: reduced decoding, random speed, motion
augmentation) at --resolution through three loaders, each with every --workers count:
    today        the loader train.py had before TrainLoader: a DataLoader built each epoch (workers start afresh),
                 OpenCV's default threads in each worker, float32 items from the workers, then sent to --device
    cpu path     TrainLoader as train.py makes it on the CPU: persistent workers of one OpenCV and one torch thread
                 that finish their items (float32)
    device path  TrainLoader as train.py makes it on a GPU: the workers send uint8 frames after the geometry and the
                 item's generator state; the main process converts and applies the appearance changes on --device
A run is one epoch of --clips-per-run clips (default: 6 x --batch-size x max(workers, 1), so that every worker makes
several batches); the loaders' runs alternate, so that the machine's changing load falls on each, and the medians of
--runs runs after one warm-up run are reported. clips/s counts from the arrival of the first batch after each
worker's first (the pipeline full) to the last batch, after the device has finished it. CPU times: the workers' from
/proc (summed over the epoch, their start included where a loader starts them), the main process's (all its threads:
receiving, pinning, and for the device path the finishing), and apart: receiving (the main thread's CPU time in
the DataLoader's next(), with 0 workers the loading itself) and finishing (the process's CPU time in it: on a GPU
kernel launches, on the CPU the work itself). Bytes per clip: of the batches as the workers send them.
Linux only (/proc). Prints one JSON object. Example: python benchmarks/bench_loader.py --workers 0 2 --runs 5
"""
import argparse
import contextlib
import functools
import json
import os
import statistics
import sys
import tempfile
import time

import cv2
import torch
from torch.utils.data import DataLoader

import common  # noqa: F401  (puts the repository on the import path)
from dataset import make_dataset
from dataset.loader import TrainLoader, one_opencv_thread
from dataset.synthetic import generate
from devices import DeviceError, device_name, open_device

LOADERS = ('today', 'cpu path', 'device path')

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument('--width', type=int, default=1920, help='frame width of the generated clips')
parser.add_argument('--height', type=int, default=1080, help='frame height of the generated clips')
parser.add_argument('--clips', type=int, default=4, help='clips generated')
parser.add_argument('--frames', type=int, default=24, help='frames per generated clip')
parser.add_argument('--resolution', type=int, default=224, help='training crop size')
parser.add_argument('--seq-length', type=int, default=8, help='frames per clip loaded')
parser.add_argument('--batch-size', type=int, default=4, help='clips per batch')
parser.add_argument('--workers', type=int, nargs='+', default=[0, 2], help='DataLoader worker counts to time')
parser.add_argument('--clips-per-run', type=int, default=None,
                    help='clips loaded per run (an epoch); default 6 x batch size x max(workers, 1); at least '
                         '4 x batch size x workers')
parser.add_argument('--runs', type=int, default=5, help='timed runs after one warm-up run; the median is reported')
parser.add_argument('--loaders', nargs='+', default=list(LOADERS), choices=LOADERS, help='loaders to time')
parser.add_argument('--today-opencv-threads', type=int, default=None,
                    help="OpenCV threads in today's workers (default: OpenCV's default, a thread per core), e.g. 16 "
                         "to see what a 16-core host does to them")
parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu',
                    help='where the batches go, and where the device path finishes them')


def main() -> None:
    args = parser.parse_args()
    if min(args.runs, args.clips, args.batch_size, args.seq_length, args.resolution) < 1 or min(args.workers) < 0:
        sys.exit('error: --runs, --clips, --batch-size, --seq-length and --resolution must be at least 1, --workers '
                 '0 or more')
    if not os.path.isdir('/proc/self/task'):
        sys.exit('error: bench_loader.py reads CPU times from /proc: run it on Linux')
    try:
        device = open_device(args.device)
    except DeviceError as error:
        sys.exit(f'error: {error}')
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        root = os.path.join(folder, 'hd')
        generate(root, width=args.width, height=args.height, frames=args.frames, train_clips=args.clips,
                 valid_clips=1, train_backgrounds=args.clips, valid_backgrounds=1)
        dataset = make_dataset('videomatte240k', 'train', args.seq_length, args.resolution, videomatte_root=root,
                               backgrounds_root=os.path.join(root, 'backgrounds'))
        for workers in args.workers:
            clips = args.clips_per_run or 6 * args.batch_size * max(workers, 1)
            if clips < args.batch_size * max(4 * workers, 2):
                sys.exit(f'error: --clips-per-run {clips} is under --batch-size x 4 x {workers} workers (x 2 for 0 '
                         f'workers): every worker must make several batches')
            results[f'workers_{workers}'] = time_loaders(args, dataset, workers, clips, device)
    print(json.dumps({
        'benchmark': 'loader', 'device': device_name(device), 'torch': torch.__version__,
        'command': 'python benchmarks/bench_loader.py ' + ' '.join(sys.argv[1:]),
        'settings': {'frames': f'{args.width}x{args.height} JPEG', 'resolution': args.resolution,
                     'seq_length': args.seq_length, 'batch_size': args.batch_size, 'runs': args.runs,
                     'clips_per_run': {f'workers_{w}': args.clips_per_run or 6 * args.batch_size * max(w, 1)
                                       for w in args.workers},
                     'main_threads': torch.get_num_threads(), 'today_opencv_threads': args.today_opencv_threads,
                     'cpus': os.cpu_count(), 'preset': 'train'},
        'results': results}, indent=2))


def time_loaders(args: argparse.Namespace, dataset, workers: int, clips: int, device: torch.device) -> dict:
    """{loader: medians of the run figures, and ratios to today's} for one worker count."""
    indices = [i % len(dataset) for i in range(clips)]
    loaders = {name: BenchLoader(name, args, dataset, workers, device) for name in args.loaders}
    for name, loader in loaders.items():
        run_epoch(loader, 0, indices, workers, device)  # warm-up: the persistent workers' start, caches
    runs = {name: [] for name in loaders}
    for epoch in range(1, args.runs + 1):
        for name, loader in loaders.items():
            runs[name].append(run_epoch(loader, epoch, indices, workers, device))
    for loader in loaders.values():
        loader.close()
    results = {name: {key: round(statistics.median(run[key] for run in figures), 4) for key in figures[0]}
               for name, figures in runs.items()}
    if 'today' in results:
        for name in results:
            if name != 'today':
                results[name]['ratio_to_today'] = {
                    key: round(results[name][key] / results['today'][key], 3) if results['today'][key] else None
                    for key in ('clips_per_second', 'worker_cpu_ms_per_clip', 'main_cpu_ms_per_clip',
                                'main_cpu_ms_per_clip_receiving', 'bytes_per_clip')}
    return results


class BenchLoader:
    """One of LOADERS: batches() yields (batch as received, finish(batch)) for each batch of an epoch."""

    def __init__(self, name: str, args: argparse.Namespace, dataset, workers: int, device: torch.device):
        self.name, self.dataset, self.workers, self.device = name, dataset, workers, device
        self.batch_size, self.opencv_threads = args.batch_size, args.today_opencv_threads
        if name != 'today':
            self.train_loader = TrainLoader(dataset, args.batch_size, workers, device,
                                            finish_on_device=name == 'device path')

    def batches(self, epoch: int, indices: list[int]):
        """(iterator over the batches of an epoch as the workers send them, the function that finishes one)."""
        if self.name == 'today':
            self.dataset.set_epoch(epoch)
            # As train.py built it before TrainLoader, every epoch.
            loader = DataLoader(self.dataset, self.batch_size, sampler=indices, num_workers=self.workers,
                                pin_memory=self.device.type == 'cuda', drop_last=True,
                                generator=torch.Generator().manual_seed(epoch),
                                worker_init_fn=functools.partial(cv2.setNumThreads, self.opencv_threads)
                                if self.opencv_threads else None)
            with one_opencv_thread() if self.opencv_threads else contextlib.nullcontext():
                return iter(loader), lambda batch: [x.to(self.device, non_blocking=True) for x in batch]
        self.train_loader.sampler.set_epoch_indices(epoch, indices)
        with one_opencv_thread():  # as TrainLoader.epoch starts its workers
            return iter(self.train_loader.loader), self.train_loader.finish

    def close(self) -> None:
        if self.name != 'today':
            del self.train_loader  # ends the persistent workers


def run_epoch(loader: BenchLoader, epoch: int, indices: list[int], workers: int, device: torch.device) -> dict:
    """Figures of one epoch of `loader` (see the module docstring)."""
    batches, finish = loader.batches(epoch, indices)
    count = len(indices) // loader.batch_size
    children_before = children_cpu_seconds()
    main_before = time.process_time()
    finish_seconds = 0.0
    received_bytes = 0
    steady_from = max(workers, 1)  # each worker's first batch is the ramp-up
    receive_seconds = 0.0
    for index in range(count):
        receive_started = time.thread_time()
        batch = next(batches)
        receive_seconds += time.thread_time() - receive_started
        if index == steady_from:
            started = time.perf_counter()
        received_bytes += batch_bytes(batch)
        finish_started = time.process_time()
        finish(batch)
        finish_seconds += time.process_time() - finish_started
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    ended = time.perf_counter()
    # Read before the iterator ends: today's workers exit with it.
    children_after = children_cpu_seconds()
    threads = [children_threads(pid) for pid in children_after if pid not in children_before or
               children_after[pid] > children_before[pid]]
    main_seconds = time.process_time() - main_before
    for _ in batches:  # the end of the epoch (none left: drop_last)
        pass
    clips = count * loader.batch_size
    worker_seconds = sum(seconds - children_before.get(pid, 0.0) for pid, seconds in children_after.items())
    return {'clips_per_second': (count - steady_from) * loader.batch_size / (ended - started),
            'worker_cpu_ms_per_clip': 1e3 * worker_seconds / clips,
            'main_cpu_ms_per_clip': 1e3 * main_seconds / clips,
            'main_cpu_ms_per_clip_receiving': 1e3 * receive_seconds / clips,
            'main_cpu_ms_per_clip_finishing': 1e3 * finish_seconds / clips,
            'bytes_per_clip': received_bytes / clips,
            'threads_per_worker': max(threads, default=0)}


def readme_table(output: dict, workers: int) -> list[str]:
    """README's table (markdown lines) of one worker count of a printed result: each loader's figures, and the ratios
    to today's loader."""
    lines = ['| loader | clips/s | worker CPU ms/clip | main CPU ms/clip receiving | main CPU ms/clip finishing | '
             'MB/clip | threads/worker |', '| --- | --- | --- | --- | --- | --- | --- |']
    for name, figures in output['results'][f'workers_{workers}'].items():
        ratios = figures.get('ratio_to_today', {})

        def cell(key: str, digits: int, scale: float = 1) -> str:
            ratio = f" ({ratios[key]:.2f}x)" if ratios.get(key) is not None else ''
            return f'{figures[key] * scale:.{digits}f}{ratio}'
        finishing = figures['main_cpu_ms_per_clip_finishing']
        lines.append(f"| {name} | {cell('clips_per_second', 2)} | {cell('worker_cpu_ms_per_clip', 1)} | "
                     f"{cell('main_cpu_ms_per_clip_receiving', 2)} | {finishing:.1f} | "
                     f"{cell('bytes_per_clip', 2, 1e-6)} | {figures['threads_per_worker']} |")
    return lines


def batch_bytes(batch) -> int:
    """Bytes of the tensors and byte strings in a collated batch (a list of tensors, or of lists of bytes)."""
    if isinstance(batch, torch.Tensor):
        return batch.numel() * batch.element_size()
    if isinstance(batch, bytes):
        return len(batch)
    return sum(batch_bytes(part) for part in batch)


def children_cpu_seconds() -> dict[int, float]:
    """{pid: user + system CPU seconds} of this process's live child processes (the DataLoader workers)."""
    me, ticks = os.getpid(), os.sysconf('SC_CLK_TCK')
    seconds = {}
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open(f'/proc/{entry}/stat') as stat:
                fields = stat.read().rsplit(')', 1)[1].split()
        except OSError:  # it ended meanwhile
            continue
        if int(fields[1]) == me:  # fields after the name: state, ppid, ..., utime (12th), stime (13th)
            seconds[int(entry)] = (int(fields[11]) + int(fields[12])) / ticks
    return seconds


def children_threads(pid: int) -> int:
    try:
        return len(os.listdir(f'/proc/{pid}/task'))
    except OSError:
        return 0


if __name__ == '__main__':
    main()
