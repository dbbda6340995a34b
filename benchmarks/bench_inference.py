"""Inference speed of MattingBase per backbone: frames/s over chunks of frames with the state carried.

Prints one JSON object. Example: python benchmarks/bench_inference.py --backbones mobilenetv2 --runs 3
"""
import argparse
import json

import torch

from common import device_name, median_seconds
from model import BACKBONES, MattingBase

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
        seconds = median_seconds(lambda: matte_chunks(model, src, args.chunks), runs=args.runs, device=device)
        results[backbone] = {'frames_per_second': round(args.chunk * args.chunks / seconds, 3),
                             'seconds_per_run': round(seconds, 4)}
    print(json.dumps({
        'benchmark': 'inference', 'device': device_name(device), 'torch': torch.__version__,
        'settings': {'width': args.width, 'height': args.height, 'chunk': args.chunk, 'chunks': args.chunks,
                     'runs': args.runs, 'dtype': 'float32', 'threads': torch.get_num_threads()},
        'results': results}, indent=2))


@torch.no_grad()
def matte_chunks(model: MattingBase, src: torch.Tensor, chunks: int) -> None:
    """Run `chunks` chunks of the clip, carrying the ConvLSTM state from chunk to chunk."""
    state = None
    for _ in range(chunks):
        *_, state = model(src, state)


if __name__ == '__main__':
    main()
