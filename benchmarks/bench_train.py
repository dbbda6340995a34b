"""Training speed per backbone: frames/s of forward, loss, backward and optimizer step, as train.py does them
(on the CPU with its allocator setting, devices.reuse_freed_cpu_memory).

Prints one JSON object. Example: python benchmarks/bench_train.py --backbones mobilenetv2 --runs 3
"""
import argparse
import json
import sys

import torch

from common import median_seconds
from devices import DeviceError, device_name, open_device, reuse_freed_cpu_memory
from model import BACKBONES, MattingBase
from train import make_grad_scaler, matting_loss

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument('--backbones', nargs='+', default=list(BACKBONES), choices=BACKBONES, help='backbones to time')
parser.add_argument('--resolution', type=int, default=224, help='square training crop in pixels')
parser.add_argument('--batch-size', type=int, default=4, help='sequences per step')
parser.add_argument('--seq-length', type=int, default=8, help='frames per sequence')
parser.add_argument('--runs', type=int, default=3, help='timed steps after one warm-up step; the median is reported')
parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu', help='torch device')
parser.add_argument('--amp', action=argparse.BooleanOptionalAction, default=None,
                    help='fp16 autocast with a GradScaler (default: on with CUDA)')


def main() -> None:
    args = parser.parse_args()
    try:
        device = open_device(args.device)
    except DeviceError as error:
        sys.exit(f'error: {error}')
    reuse_freed_cpu_memory(device)
    use_amp = args.amp if args.amp is not None else device.type == 'cuda'
    shape = (args.batch_size, args.seq_length)
    size = (args.resolution, args.resolution)
    true_fgr, true_bgr = torch.rand(*shape, 3, *size, device=device), torch.rand(*shape, 3, *size, device=device)
    true_pha = torch.rand(*shape, 1, *size, device=device)
    true_src = true_fgr * true_pha + true_bgr * (1 - true_pha)
    results = {}
    for backbone in args.backbones:
        model = MattingBase(backbone).train().to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        scaler = make_grad_scaler(enabled=use_amp and device.type == 'cuda')

        def step() -> None:
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp and device.type == 'cuda'):
                pred_pha, pred_fgr, pred_err, _, _ = model(true_src)
            loss = matting_loss(pred_pha.float(), pred_fgr.float(), pred_err.float(), true_pha, true_fgr)['total']
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

        seconds = median_seconds(step, runs=args.runs, device=device)
        results[backbone] = {'frames_per_second': round(args.batch_size * args.seq_length / seconds, 3),
                             'seconds_per_step': round(seconds, 4)}
    print(json.dumps({
        'benchmark': 'train', 'device': device_name(device), 'torch': torch.__version__,
        'settings': {'resolution': args.resolution, 'batch_size': args.batch_size, 'seq_length': args.seq_length,
                     'runs': args.runs, 'amp': use_amp, 'threads': torch.get_num_threads()},
        'results': results}, indent=2))


if __name__ == '__main__':
    main()
