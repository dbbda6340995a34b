"""Peak memory of streaming inference: inference.py over the first 100 and the first 1000 frames of one video.

Writes a synthetic mp4 of max(--lengths) frames (a textured disc moving over a noise background) and a random-weight
checkpoint to a temporary folder, then runs inference.py as a user would (video in; alpha and composite videos
out) once per --lengths value, each in a fresh process, and reports each process's peak resident memory
(os.wait4's ru_maxrss) and the ratio of the longest to the shortest. Streaming holds one chunk of frames at a
time, so the peak must not grow with the video's length. Ctrl-C or SIGTERM stops inference.py too and exits with
130 or 143.
Prints one JSON object. Example: python benchmarks/bench_memory.py --lengths 100 1000
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np
import torch

from common import REPO
from devices import device_name
from errors import run_main
from model import BACKBONES, MattingBase

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument('--backbone', default='mobilenetv2', choices=BACKBONES, help='encoder')
parser.add_argument('--lengths', type=int, nargs='+', default=[100, 1000], help='frames matted per run')
parser.add_argument('--width', type=int, default=256, help='frame width of the generated video')
parser.add_argument('--height', type=int, default=144, help='frame height of the generated video')
parser.add_argument('--seq-length', type=int, default=8, help="inference.py's frames per forward call")
parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu', help='torch device')


def main() -> None:
    args = parser.parse_args()
    run_main(lambda: benchmark(args), 'inference.py is stopped; nothing printed')


def benchmark(args: argparse.Namespace) -> None:
    if min(args.lengths) < 1:
        sys.exit('error: --lengths must be at least 1')
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        video = os.path.join(folder, 'input.mp4')
        write_video(video, max(args.lengths), args.width, args.height)
        checkpoint = os.path.join(folder, 'model.pth')
        torch.manual_seed(0)
        torch.save(MattingBase(args.backbone).state_dict(), checkpoint)
        for length in args.lengths:
            command = [sys.executable, os.path.join(REPO, 'inference.py'), '--model-backbone', args.backbone,
                       '--model-checkpoint', checkpoint, '--input', video, '--num-frames', str(length),
                       '--output-dir', os.path.join(folder, f'output-{length}'), '--output-types', 'pha', 'com',
                       '--seq-length', str(args.seq_length), '--device', args.device]
            started = time.perf_counter()
            # stderr to a file, not a pipe: nobody reads a pipe while waiting, and tqdm would fill it.
            with open(os.path.join(folder, f'inference-{length}.log'), 'w+') as log:
                process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
                status = None
                try:
                    _, status, usage = os.wait4(process.pid, 0)
                finally:
                    if status is None:  # interrupted before inference.py ended: it must not outlive the benchmark
                        process.kill()
                        process.wait()
                if os.waitstatus_to_exitcode(status) != 0:
                    log.seek(0)
                    sys.exit(f'error: inference.py failed on {length} frames: {log.read()[-2000:]}')
            results[str(length)] = {'peak_rss_mib': round(usage.ru_maxrss / 1024, 1),
                                    'seconds': round(time.perf_counter() - started, 1)}
    peaks = [results[str(length)]['peak_rss_mib'] for length in sorted(args.lengths)]
    print(json.dumps({
        'benchmark': 'memory', 'device': device_name(args.device), 'torch': torch.__version__,
        'settings': vars(args), 'results': results,
        'longest_over_shortest': round(peaks[-1] / peaks[0], 4)}, indent=2))


def write_video(path: str, frames: int, width: int, height: int) -> None:
    """An mp4 of a bright disc with a checker texture sliding over a noise background."""
    rng = np.random.default_rng(0)
    background = cv2.GaussianBlur(rng.integers(0, 255, (height, width, 3), np.uint8), (0, 0), 3)
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*'mp4v'), 30, (width, height))
    y, x = np.mgrid[:height, :width]
    for t in range(frames):
        centre_x = width * (0.5 + 0.3 * np.sin(t / 20))
        inside = (x - centre_x) ** 2 + (y - height * 0.6) ** 2 < (height * 0.3) ** 2
        checker = (((x + t) // 8 + y // 8) % 2 * 200 + 40).astype(np.uint8)[..., None]
        writer.write(np.where(inside[..., None], checker, background))
    writer.release()


if __name__ == '__main__':
    main()
