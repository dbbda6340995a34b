"""Inference speed of MattingBase per backbone: frames/s over chunks of frames with the state carried.

Each backbone runs as a plain fp32 eager model (the baseline) and with the speed-ups of model/fold_batchnorm.py
(BatchNorm folded into the convolutions, then also channels_last), with --autocast (float16 on CUDA, where it is
on by default; bfloat16 on CPU) and with --compile also torch.compile. On the CPU, every variant also runs in a
second process whose allocator keeps freed memory for reuse (devices.reuse_freed_cpu_memory, as train.py,
validate.py and inference.py set it up): "..., freed memory reused". inference.py runs "folded, freed memory reused"
on the CPU and "folded + channels_last" on CUDA. Every variant reports frames/s, its speed-up over the baseline timed
in the same run (runs of the variants alternate across both processes, so load changes hit all alike) and the
largest difference of its alpha and foreground from the baseline's. --hd adds 1920x1080 frames the two ways
inference.py offers: MattingRefine (the network at --refine-backbone-scale, the refiner at full size) and
MattingBase at --downsample-ratio with the result upsampled.
Prints one JSON object. Example: python benchmarks/bench_inference.py --backbones mobilenetv2 --runs 5 --hd
"""
import argparse
import copy
import json
import multiprocessing
import sys
from collections.abc import Callable

import torch

from common import median_seconds
from devices import DeviceError, device_name, open_device, reuse_freed_cpu_memory
from model import BACKBONES, MattingBase, MattingRefine
from model.fold_batchnorm import fold_batchnorm, prepare_for_inference
from model.model import run_model

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument('--backbones', nargs='+', default=list(BACKBONES), choices=BACKBONES, help='backbones to time')
parser.add_argument('--width', type=int, default=512, help='frame width in pixels')
parser.add_argument('--height', type=int, default=288, help='frame height in pixels')
parser.add_argument('--chunk', type=int, default=8, help='frames per forward call (the state is carried between calls)')
parser.add_argument('--chunks', type=int, default=2, help='chunks per timed run')
parser.add_argument('--runs', type=int, default=3, help='timed runs after one warm-up run; the median is reported')
parser.add_argument('--compile', action='store_true', help='also time torch.compile of the folded channels_last model')
parser.add_argument('--autocast', action=argparse.BooleanOptionalAction, default=None,
                    help='also time autocast (float16 on CUDA, bfloat16 on CPU); default: on CUDA only, since CPUs '
                         'without bfloat16 instructions run it several times slower than float32')
parser.add_argument('--hd', action='store_true', help='also time 1920x1080 frames through MattingRefine and '
                                                      'through MattingBase at --downsample-ratio')
parser.add_argument('--hd-chunk', type=int, default=4, help='frames per forward call at 1920x1080')
parser.add_argument('--refine-backbone-scale', type=float, default=0.25, help='MattingRefine network scale (HD)')
parser.add_argument('--downsample-ratio', type=float, default=0.25, help='MattingBase downsample ratio (HD)')
parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu', help='torch device')


def main() -> None:
    args = parser.parse_args()
    if min(args.runs, args.chunk, args.chunks, args.hd_chunk) < 1:
        sys.exit('error: --runs, --chunk, --chunks and --hd-chunk must be at least 1')
    try:
        device = open_device(args.device)
    except DeviceError as error:
        sys.exit(f'error: {error}')
    results = {backbone: time_in_processes(args, 'base', backbone) for backbone in args.backbones}
    hd = {}
    if args.hd:
        for backbone in args.backbones:
            hd[f'{backbone} MattingRefine'] = time_in_processes(args, 'refine', backbone)
            hd[f'{backbone} downsample {args.downsample_ratio}'] = time_in_processes(args, 'downsample', backbone)
    print(json.dumps({
        'benchmark': 'inference', 'device': device_name(device), 'torch': torch.__version__,
        'settings': {**vars(args), 'threads': torch.get_num_threads()},
        'results': results, 'hd_1920x1080': hd}, indent=2))


def model_variants(model: MattingBase, device: torch.device, compile_model: bool, use_autocast: bool
                   ) -> dict[str, tuple[MattingBase, torch.dtype | None]]:
    """name -> (model, autocast dtype or None); 'eager' first, the baseline."""
    eager = model.eval().to(device)
    folded = copy.deepcopy(eager)
    fold_batchnorm(folded)
    optimised = prepare_for_inference(copy.deepcopy(eager), device, channels_last=True)
    low_precision = torch.float16 if device.type == 'cuda' else torch.bfloat16
    variants = {'eager': (eager, None), 'folded': (folded, None), 'folded + channels_last': (optimised, None)}
    if use_autocast:
        variants[f'folded + channels_last + {str(low_precision)[6:]} autocast'] = (optimised, low_precision)
    if compile_model:
        variants['folded + channels_last + torch.compile'] = (torch.compile(optimised), None)
    return variants


def eager_and_optimised(model: MattingBase, device: torch.device) -> dict[str, tuple[MattingBase, None]]:
    """The baseline and the model as inference.py prepares it (folded; channels_last on CUDA), without the other
    variants (HD frames are large)."""
    eager = model.eval().to(device)
    return {'eager': (eager, None), 'as inference.py': (prepare_for_inference(copy.deepcopy(eager), device), None)}


REUSED = ', freed memory reused'


def time_in_processes(args: argparse.Namespace, job: str, backbone: str) -> dict[str, dict]:
    """frames/s, speed-up over 'eager' and largest |difference| from 'eager' of every variant of one job ('base':
    --width x --height; 'refine' or 'downsample': 1920x1080). The variants live in worker processes, one per
    allocator setting (the CPU's second one keeps freed memory for reuse, which cannot be undone in a process)."""
    context = multiprocessing.get_context('spawn')
    reuse_settings = (False, True) if torch.device(args.device).type == 'cpu' else (False,)
    connections, workers = {}, []
    for reuse in reuse_settings:
        connection, worker_connection = context.Pipe()
        worker = context.Process(target=serve_variants, args=(worker_connection, args, job, backbone, reuse),
                                 daemon=True)
        worker.start()
        worker_connection.close()  # the worker's end: a worker that dies then ends recv() with EOFError
        workers.append((worker, connection))
    outputs = {}
    for worker, connection in workers:
        first_outputs = receive(worker, connection)  # the warm-up (and compilation) of every variant in that process
        outputs.update(first_outputs)
        connections.update({name: (worker, connection) for name in first_outputs})
    seconds = {name: [] for name in outputs}
    for _ in range(args.runs):
        for name, (worker, connection) in connections.items():
            connection.send(name)
            seconds[name].append(receive(worker, connection))
    for worker, connection in workers:
        connection.send(None)
        worker.join()
    chunk, chunks = (args.chunk, args.chunks) if job == 'base' else (args.hd_chunk, 1)
    median = {name: sorted(times)[len(times) // 2] for name, times in seconds.items()}
    return {name: {
        'frames_per_second': round(chunk * chunks / median[name], 3),
        'speedup': round(median['eager'] / median[name], 3),
        'max_abs_difference': max(float(abs(a - b).max()) for a, b in zip(outputs[name], outputs['eager'])),
    } for name in outputs}


def receive(worker: multiprocessing.Process, connection) -> object:
    """The worker's next message; exits with an error if the worker died (its traceback is on stderr)."""
    try:
        return connection.recv()
    except EOFError:
        worker.join()
        sys.exit(f'error: a benchmark worker process failed (exit code {worker.exitcode}); see its error above')


def serve_variants(connection, args: argparse.Namespace, job: str, backbone: str, reuse_memory: bool) -> None:
    """A worker process: builds the job's variants (the same weights and frames in every worker: seed 0), sends
    {name: outputs} of a first call of each, then times one call of each variant named on `connection` until None."""
    device = open_device(args.device)
    if reuse_memory:
        reuse_freed_cpu_memory(device)
    torch.manual_seed(0)
    model = MattingRefine(backbone, backbone_scale=args.refine_backbone_scale) if job == 'refine' else \
        MattingBase(backbone)
    if job == 'base':
        src = torch.rand(1, args.chunk, 3, args.height, args.width, device=device)
        use_autocast = args.autocast if args.autocast is not None else device.type == 'cuda'
        variants = model_variants(model, device, args.compile, use_autocast)
        chunks, downsample_ratio = args.chunks, 1
    else:
        src = torch.rand(1, args.hd_chunk, 3, 1080, 1920, device=device)
        variants = eager_and_optimised(model, device)
        chunks, downsample_ratio = 1, args.downsample_ratio if job == 'downsample' else 1
    suffix = REUSED if reuse_memory else ''
    calls = {name + suffix: matting_run(variant, dtype, src, chunks, device, downsample_ratio)
             for name, (variant, dtype) in variants.items()}
    # As float32 numpy arrays: torch tensors would travel through shared memory, which HD outputs can exceed.
    connection.send({name: [output.float().cpu().numpy() for output in call()] for name, call in calls.items()})
    while (name := connection.recv()) is not None:
        connection.send(median_seconds(calls[name], warmup=0, runs=1, device=device))


def matting_run(model: MattingBase, dtype: torch.dtype | None, src: torch.Tensor, chunks: int, device: torch.device,
                downsample_ratio: float) -> Callable[[], list[torch.Tensor]]:
    """A function that mattes `chunks` chunks of src, carrying the state, and returns every chunk's pha and fgr."""
    @torch.no_grad()
    def run() -> list[torch.Tensor]:
        state, outputs = None, []
        for _ in range(chunks):
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                pha, fgr, state = run_model(model, src, state, downsample_ratio)
            outputs += [pha, fgr]
        return outputs
    return run


if __name__ == '__main__':
    main()
