"""Inference speed of MattingBase per backbone: frames/s over chunks of frames with the state carried.

Prints one JSON object. Example: python benchmarks/bench_inference.py --backbones mobilenetv2 --runs 3
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from model import BACKBONES, MattingBase  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument('--backbones', nargs='+', default=list(BACKBONES), choices=BACKBONES, help='backbones to time')
parser.add_argument('--width', type=int, default=512, help='frame width in pixels')
parser.add_argument('--height', type=int, default=288, help='frame height in pixels')
parser.add_argument('--chunk', type=int, default=8, help='frames per forward call (the state is carried between calls)')
parser.add_argument('--chunks', type=int, default=2, help='chunks per timed run')
parser.add_argument('--runs', type=int, default=3, help='timed runs after one warm-up run; the median is reported')
parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu', help='torch device')


def main() -> None:
    args = parser.parse_args()
    device = torch.device(args.device)
    results = {}
    for backbone in args.backbones:
        model = MattingBase(backbone).eval().to(device)
        src = torch.rand(1, args.chunk, 3, args.height, args.width, device=device)
        times = [time_run(model, src, args.chunks, device) for _ in range(args.runs + 1)][1:]
        seconds = statistics.median(times)
        results[backbone] = {'frames_per_second': round(args.chunk * args.chunks / seconds, 3),
                             'seconds_per_run': round(seconds, 4)}
    print(json.dumps({
        'benchmark': 'inference', 'device': device_name(device), 'torch': torch.__version__,
        'settings': {'width': args.width, 'height': args.height, 'chunk': args.chunk, 'chunks': args.chunks,
                     'runs': args.runs, 'dtype': 'float32', 'threads': torch.get_num_threads()},
        'results': results}, indent=2))


@torch.no_grad()
def time_run(model: MattingBase, src: torch.Tensor, chunks: int, device: torch.device) -> float:
    """Seconds to matte `chunks` chunks of the clip, carrying the ConvLSTM state from chunk to chunk."""
    state = None
    start = time.perf_counter()
    for _ in range(chunks):
        *_, state = model(src, state)
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def device_name(device: torch.device) -> str:
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    return f'{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores'


if __name__ == '__main__':
    main()
