"""Loader speed: clips/s of the training loader at 224x224 from HD JPEG clips, full vs reduced JPEG decoding.

Writes HD synthetic clips (1920x1080 JPEG frames and backgrounds) to a temporary folder, then times the
training dataset (make_dataset's train preset: decoding, random speed, motion augmentation) through a
DataLoader with each worker count, decoding frames whole and then reduced (Pillow's draft mode). A run
loads the same --clips-per-run items; runs of the two decodings alternate, and the median of --runs runs
after one warm-up run is reported, with the speed-up of reduced decoding as a ratio to full decoding with
the same workers.
Prints one JSON object. Example: python benchmarks/bench_loader.py --workers 0 2 --runs 5
"""
import argparse
import json
import os
import statistics
import tempfile
import time

import torch
from torch.utils.data import DataLoader

import common  # noqa: F401  (puts the repository on the import path)
from dataset import make_dataset
from dataset.synthetic import generate
from devices import device_name

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument('--width', type=int, default=1920, help='frame width of the generated clips')
parser.add_argument('--height', type=int, default=1080, help='frame height of the generated clips')
parser.add_argument('--clips', type=int, default=3, help='clips generated')
parser.add_argument('--frames', type=int, default=24, help='frames per generated clip')
parser.add_argument('--resolution', type=int, default=224, help='training crop size')
parser.add_argument('--seq-length', type=int, default=8, help='frames per clip loaded')
parser.add_argument('--batch-size', type=int, default=4, help='clips per batch')
parser.add_argument('--workers', type=int, nargs='+', default=[0, 2], help='DataLoader worker counts to time')
parser.add_argument('--clips-per-run', type=int, default=16, help='clips loaded per timed run')
parser.add_argument('--runs', type=int, default=7, help='timed runs after one warm-up run; the median is reported')


def main() -> None:
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        root = os.path.join(folder, 'hd')
        generate(root, width=args.width, height=args.height, frames=args.frames, train_clips=args.clips,
                 valid_clips=1, train_backgrounds=args.clips, valid_backgrounds=1)
        for workers in args.workers:
            loaders = {}
            for decoding in ('full', 'reduced'):
                dataset = make_dataset('synthetic', 'train', args.seq_length, args.resolution, videomatte_root=root,
                                       reduced_decoding=decoding == 'reduced')
                indices = [i % len(dataset) for i in range(args.clips_per_run)]
                loaders[decoding] = DataLoader(dataset, args.batch_size, sampler=indices, num_workers=workers,
                                               persistent_workers=workers > 0)
                load_all(loaders[decoding])  # warm-up, and the workers' start
            # Runs alternate between the two, so that the machine's changing load weighs on both alike.
            times = {decoding: [] for decoding in loaders}
            for _ in range(args.runs):
                for decoding, loader in loaders.items():
                    start = time.perf_counter()
                    load_all(loader)
                    times[decoding].append(time.perf_counter() - start)
            timings = {decoding: {'clips_per_second': round(args.clips_per_run / statistics.median(seconds), 3),
                                  'seconds_per_run': round(statistics.median(seconds), 4)}
                       for decoding, seconds in times.items()}
            timings['speedup_reduced_vs_full'] = round(statistics.median(times['full'])
                                                       / statistics.median(times['reduced']), 3)
            results[f'workers_{workers}'] = timings
    print(json.dumps({
        'benchmark': 'loader', 'device': device_name('cpu'),
        'torch': torch.__version__,
        'settings': {'frames': f'{args.width}x{args.height} JPEG', 'resolution': args.resolution,
                     'seq_length': args.seq_length, 'batch_size': args.batch_size,
                     'clips_per_run': args.clips_per_run, 'runs': args.runs, 'threads': torch.get_num_threads(),
                     'preset': 'train'},
        'results': results}, indent=2))


def load_all(loader: DataLoader) -> None:
    for _ in loader:
        pass


if __name__ == '__main__':
    main()
