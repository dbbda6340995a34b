"""Training speed per backbone: frames/s of forward, loss, backward and optimizer step, as train.py does them
(on the CPU with its allocator setting, devices.reuse_freed_cpu_memory).

Every variant named in --variants is timed in this one process, under the same threads and allocator setting
(MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1073741824 makes the same for any program), one step of each in turn
so that changes of the machine's load fall on all of them; 'fp32' (the plain eager model: the original project's
architecture and precision) is always timed, and every speed-up is a ratio to it:
    fp32            eager, float32
    bf16            autocast to bfloat16 (CPU, where oneDNN has bf16 instructions) or float16 with a GradScaler (CUDA)
    bf16-cl         bf16, the model in channels_last memory layout
    fp32-compile    torch.compile of the model (default inductor backend), float32
    bf16-compile    torch.compile with bf16 autocast

Prints one JSON object. Example: python benchmarks/bench_train.py --backbones mobilenetv2 --resolution 64 \
    --batch-size 2 --variants fp32 bf16 --runs 5
"""
import argparse
import json
import statistics
import sys
from collections.abc import Callable

import torch

from common import median_seconds
from devices import (DeviceError, device_name, low_precision_dtype, make_grad_scaler, open_device,
                     reuse_freed_cpu_memory)
from loss import matting_loss
from model import BACKBONES, MattingBase

VARIANTS = ('fp32', 'bf16', 'bf16-cl', 'fp32-compile', 'bf16-compile')

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument('--backbones', nargs='+', default=list(BACKBONES), choices=BACKBONES, help='backbones to time')
parser.add_argument('--resolution', type=int, default=224, help='square training crop in pixels')
parser.add_argument('--batch-size', type=int, default=4, help='sequences per step')
parser.add_argument('--seq-length', type=int, default=8, help='frames per sequence')
parser.add_argument('--runs', type=int, default=3, help='timed steps after the warm-up steps; the median is reported')
parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu', help='torch device')
parser.add_argument('--variants', nargs='+', default=['fp32', 'bf16'], choices=VARIANTS,
                    help="what to time (see above); 'fp32', the baseline of the ratios, is added if missing")


def main() -> None:
    args = parser.parse_args()
    try:
        device = open_device(args.device)
    except DeviceError as error:
        sys.exit(f'error: {error}')
    reuse_freed_cpu_memory(device)
    if any(variant.startswith('bf16') for variant in args.variants) and low_precision_dtype(device) is None:
        sys.exit(f'error: {device_name(device)} has no bfloat16 instructions: drop the bf16 variants')
    shape = (args.batch_size, args.seq_length)
    size = (args.resolution, args.resolution)
    true_fgr, true_bgr = torch.rand(*shape, 3, *size, device=device), torch.rand(*shape, 3, *size, device=device)
    true_pha = torch.rand(*shape, 1, *size, device=device)
    true_src = true_fgr * true_pha + true_bgr * (1 - true_pha)
    variants = ['fp32', *(variant for variant in args.variants if variant != 'fp32')]
    results = {}
    for backbone in args.backbones:
        steps = {variant: training_step(backbone, variant, device, true_src, true_pha, true_fgr)
                 for variant in variants}
        seconds = interleaved_median_seconds(steps, args.runs, device)
        results[backbone] = {variant: {'frames_per_second': round(args.batch_size * args.seq_length / time, 3),
                                       'seconds_per_step': round(time, 4),
                                       'speedup': round(seconds['fp32'] / time, 3)}
                             for variant, time in seconds.items()}
    print(json.dumps({
        'benchmark': 'train', 'device': device_name(device), 'torch': torch.__version__,
        'command': 'python benchmarks/bench_train.py ' + ' '.join(sys.argv[1:]),
        'settings': {'resolution': args.resolution, 'batch_size': args.batch_size, 'seq_length': args.seq_length,
                     'runs': args.runs, 'threads': torch.get_num_threads(), 'baseline': 'fp32',
                     'allocator': "freed memory reused (devices.reuse_freed_cpu_memory) for every variant"
                                  if device.type == 'cpu' else 'CUDA caching allocator'},
        'results': results}, indent=2))


def training_step(backbone: str, variant: str, device: torch.device, true_src: torch.Tensor, true_pha: torch.Tensor,
                  true_fgr: torch.Tensor) -> Callable[[], None]:
    """One training step of `variant` (see the module docstring) as a function, from the same initial weights."""
    torch.manual_seed(0)
    model = MattingBase(backbone).train().to(device)
    low_precision = low_precision_dtype(device) if variant.startswith('bf16') else None
    if variant.endswith('-cl'):
        model = model.to(memory_format=torch.channels_last)
    forward = torch.compile(model) if variant.endswith('-compile') else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = make_grad_scaler(enabled=low_precision == torch.float16)

    def step() -> None:
        with torch.autocast(device.type, dtype=low_precision or torch.float32, enabled=low_precision is not None):
            pred_pha, pred_fgr, pred_err, _, _ = forward(true_src)
        loss = matting_loss(pred_pha.float(), pred_fgr.float(), pred_err.float(), true_pha, true_fgr)['total']
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    return step


def interleaved_median_seconds(steps: dict[str, Callable[[], None]], runs: int, device: torch.device
                               ) -> dict[str, float]:
    """name -> median seconds of `runs` calls of each step, the steps called in turn, after two untimed calls of each
    (compile traces on its first calls: two cover the trace and the first recompilation, if any)."""
    for step in steps.values():
        median_seconds(step, warmup=1, runs=1, device=device)  # two calls, their time unused
    times = {name: [] for name in steps}
    for _ in range(runs):
        for name, step in steps.items():
            times[name].append(median_seconds(step, warmup=0, runs=1, device=device))
    return {name: statistics.median(values) for name, values in times.items()}


if __name__ == '__main__':
    main()
