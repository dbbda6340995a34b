"""Inference speed of MattingBase per backbone: frames/s over chunks of frames with the state carried.

Every speed-up is a ratio to the plain fp32 eager model (the original project's architecture) timed in the same
process, so under the same threads and allocator setting; runs of the variants alternate, so changes of the
machine's load fall on all of them. On the CPU that process makes the allocator setting train.py, validate.py and
inference.py make (devices.reuse_freed_cpu_memory; any program gets it with MALLOC_MMAP_MAX_=0
MALLOC_TRIM_THRESHOLD_=1073741824). The setting's own effect is reported apart, under 'allocator': the eager model
timed in a second process under glibc's default, its runs alternating with the first's. It speeds up any PyTorch
program that allocates large tensors, not this model in particular.

Variants (CUDA: fp16 in place of bf16):
    eager                                     the baseline
    folded                                    BatchNorm folded into the convolutions (model/fold_batchnorm.py)
    folded + channels_last
    folded + bf16 autocast                    where devices.low_precision_dtype gives bf16 (or --autocast)
    folded + channels_last + bf16 autocast
    folded + channels_last + torch.compile    with --compile
    onnxruntime fp32, onnxruntime int8        with --onnxruntime (CPU): scripts/export.py's ONNX model, and that
                                              model quantized by onnxruntime (static, per-channel int8 weights,
                                              uint8 activations calibrated on the benchmark's frames)
'inference.py' names the variant inference.py runs by default on this device. Each variant also reports the largest
difference of its alpha and foreground from the baseline's. --hd adds 1920x1080 frames the two ways inference.py
offers: MattingRefine (the network at --refine-backbone-scale, the refiner at full size) and MattingBase at
--downsample-ratio with the result upsampled; there the variants are the baseline and inference.py's default.
Prints one JSON object. Example: python benchmarks/bench_inference.py --backbones mobilenetv2 --runs 5 --hd
"""
import argparse
import copy
import importlib.util
import json
import multiprocessing
import os
import sys
import tempfile
from collections.abc import Callable

import numpy as np
import torch

from common import REPO, median_seconds
from devices import DeviceError, device_name, low_precision_dtype, open_device, reuse_freed_cpu_memory
from model import BACKBONES, MattingBase, MattingRefine
from model.fold_batchnorm import fold_batchnorm, prepare_for_inference
from model.model import run_model

sys.path.insert(0, os.path.join(REPO, 'scripts'))
import export  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument('--backbones', nargs='+', default=list(BACKBONES), choices=BACKBONES, help='backbones to time')
parser.add_argument('--width', type=int, default=512, help='frame width in pixels')
parser.add_argument('--height', type=int, default=288, help='frame height in pixels')
parser.add_argument('--chunk', type=int, default=8, help='frames per forward call (the state is carried between calls)')
parser.add_argument('--chunks', type=int, default=2, help='chunks per timed run')
parser.add_argument('--runs', type=int, default=3, help='timed runs after one warm-up run; the median is reported')
parser.add_argument('--compile', action='store_true', help='also time torch.compile of the folded channels_last model')
parser.add_argument('--autocast', action=argparse.BooleanOptionalAction, default=None,
                    help='also time autocast (float16 on CUDA, bfloat16 on CPU); default: where '
                         'devices.low_precision_dtype offers it, as inference.py --precision auto')
parser.add_argument('--onnxruntime', action='store_true',
                    help='also time the exported ONNX model in onnxruntime, fp32 and int8 (CPU; needs onnx and '
                         'onnxruntime)')
parser.add_argument('--hd', action='store_true', help='also time 1920x1080 frames through MattingRefine and '
                                                      'through MattingBase at --downsample-ratio')
parser.add_argument('--hd-chunk', type=int, default=4, help='frames per forward call at 1920x1080')
parser.add_argument('--refine-backbone-scale', type=float, default=0.25, help='MattingRefine network scale (HD)')
parser.add_argument('--downsample-ratio', type=float, default=0.25, help='MattingBase downsample ratio (HD)')
parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu', help='torch device')

# A chunk step: (src (1, T, 3, H, W) in 0..1, state or None) -> (pha (1, T, 1, H, W), fgr (1, T, 3, H, W), state).
Step = Callable[[torch.Tensor, object], tuple[torch.Tensor, torch.Tensor, object]]
DEFAULT_ALLOCATOR = "eager, glibc's default allocator"


def main() -> None:
    args = parser.parse_args()
    if min(args.runs, args.chunk, args.chunks, args.hd_chunk) < 1:
        sys.exit('error: --runs, --chunk, --chunks and --hd-chunk must be at least 1')
    try:
        device = open_device(args.device)
    except DeviceError as error:
        sys.exit(f'error: {error}')
    if args.onnxruntime and device.type != 'cpu':
        sys.exit('error: --onnxruntime times the CPU: pass --device cpu')
    missing = [name for name in ('onnx', 'onnxruntime') if importlib.util.find_spec(name) is None]
    if args.onnxruntime and missing:
        sys.exit(f"error: --onnxruntime needs {' and '.join(missing)}: pip install {' '.join(missing)}")
    results = {backbone: time_in_processes(args, 'base', backbone) for backbone in args.backbones}
    hd = {}
    if args.hd:
        for backbone in args.backbones:
            hd[f'{backbone} MattingRefine'] = time_in_processes(args, 'refine', backbone)
            hd[f'{backbone} downsample {args.downsample_ratio}'] = time_in_processes(args, 'downsample', backbone)
    print(json.dumps({
        'benchmark': 'inference', 'device': device_name(device), 'torch': torch.__version__,
        'command': 'python benchmarks/bench_inference.py ' + ' '.join(sys.argv[1:]),
        'settings': {**vars(args), 'threads': torch.get_num_threads()},
        'inference.py': inference_variant(device),
        'results': results, 'hd_1920x1080': hd}, indent=2))


def low_precision_name(device: torch.device) -> str:
    return 'fp16' if device.type == 'cuda' else 'bf16'


def inference_variant(device: torch.device) -> str:
    """The variant inference.py runs by default on `device` (--precision auto)."""
    layout = ' + channels_last' if device.type == 'cuda' else ''
    if low_precision_dtype(device) is None:
        return f'folded{layout}'
    return f'folded{layout} + {low_precision_name(device)} autocast'


def model_variants(args: argparse.Namespace, model: MattingBase, src: torch.Tensor, device: torch.device
                   ) -> dict[str, Step]:
    """name -> chunk step of every variant of the module docstring that `args` asks for; 'eager' first."""
    eager = model.eval().to(device)
    folded = copy.deepcopy(eager)
    fold_batchnorm(folded)
    channels_last = prepare_for_inference(copy.deepcopy(eager), device, channels_last=True)
    variants = {'eager': torch_step(eager, None), 'folded': torch_step(folded, None),
                'folded + channels_last': torch_step(channels_last, None)}
    use_autocast = args.autocast if args.autocast is not None else low_precision_dtype(device) is not None
    if use_autocast:
        dtype, name = torch.float16 if device.type == 'cuda' else torch.bfloat16, low_precision_name(device)
        variants[f'folded + {name} autocast'] = torch_step(folded, dtype)
        variants[f'folded + channels_last + {name} autocast'] = torch_step(channels_last, dtype)
    if args.compile:
        variants['folded + channels_last + torch.compile'] = torch_step(torch.compile(channels_last), None)
    if args.onnxruntime:
        variants.update(onnxruntime_steps(eager, src))
    return variants


def torch_step(model: MattingBase, dtype: torch.dtype | None, downsample_ratio: float = 1) -> Step:
    """A chunk step of a PyTorch model, under autocast to `dtype` (None: float32), as inference.py runs it."""
    def step(src: torch.Tensor, state: list | None) -> tuple[torch.Tensor, torch.Tensor, list]:
        with torch.no_grad(), torch.autocast(src.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            return run_model(model, src, state, downsample_ratio)
    return step


def onnxruntime_steps(model: MattingBase, src: torch.Tensor) -> dict[str, Step]:
    """Chunk steps of the model exported by scripts/export.py (T = src's frames), in onnxruntime fp32 and int8:
    quantized statically (QDQ, per-channel int8 weights, uint8 activations calibrated on src from a zero state)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    state = export.zero_state(1, *src.shape[-2:])
    with torch.no_grad():
        data = export.export_onnx(export.ExplicitStateMatting(model).eval(), (src.cpu(), *state), opset=17)
    feed = dict(zip(['src', *export.STATE_NAMES], [tensor.numpy() for tensor in (src.cpu(), *state)]))

    class Calibration(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter([feed])

        def get_next(self) -> dict | None:
            return next(self.feeds, None)

    with tempfile.TemporaryDirectory() as folder:
        paths = [os.path.join(folder, name) for name in ('fp32.onnx', 'prepared.onnx', 'int8.onnx')]
        with open(paths[0], 'wb') as file:
            file.write(data)
        quant_pre_process(paths[0], paths[1], skip_symbolic_shape=True)  # its symbolic pass fails on this graph
        quantize_static(paths[1], paths[2], Calibration(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        with open(paths[2], 'rb') as file:
            quantized = file.read()
    return {'onnxruntime fp32': onnxruntime_step(data), 'onnxruntime int8': onnxruntime_step(quantized)}


def onnxruntime_step(data: bytes) -> Step:
    """A chunk step of a serialised ONNX model of scripts/export.py in onnxruntime on the CPU, with torch's threads;
    its state is the list of six numpy arrays h1, c1, ..., c3."""
    import onnxruntime
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = onnxruntime.InferenceSession(data, options, providers=['CPUExecutionProvider'])

    def step(src: torch.Tensor, state: list | None) -> tuple[torch.Tensor, torch.Tensor, list]:
        if state is None:
            state = [tensor.numpy() for tensor in export.zero_state(src.shape[0], *src.shape[-2:])]
        pha, fgr, *state = session.run(None, dict(zip(['src', *export.STATE_NAMES], [src.numpy(), *state])))
        return torch.from_numpy(pha), torch.from_numpy(fgr), state
    return step


def time_in_processes(args: argparse.Namespace, job: str, backbone: str) -> dict[str, dict]:
    """frames/s, speed-up over 'eager' and largest |difference| from 'eager' of every variant of one job ('base':
    --width x --height; 'refine' or 'downsample': 1920x1080), and on the CPU the allocator setting's own effect.
    The variants live in one worker process with the allocator setting of the scripts; on the CPU a second worker
    keeps glibc's default allocator and runs the eager model alone (a setting cannot be undone in a process)."""
    context = multiprocessing.get_context('spawn')
    reuse_settings = (True, False) if torch.device(args.device).type == 'cpu' else (False,)
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
    frames = args.chunk * args.chunks if job == 'base' else args.hd_chunk
    median = {name: sorted(times)[len(times) // 2] for name, times in seconds.items()}
    results = {name: {
        'frames_per_second': round(frames / median[name], 3),
        'speedup': round(median['eager'] / median[name], 3),
        'max_abs_difference': max(float(abs(a - b).max()) for a, b in zip(outputs[name], outputs['eager'])),
    } for name in outputs if name != DEFAULT_ALLOCATOR}
    if DEFAULT_ALLOCATOR in median:
        results['allocator'] = {
            'eager frames/s, default allocator': round(frames / median[DEFAULT_ALLOCATOR], 3),
            'eager frames/s, freed memory reused': results['eager']['frames_per_second'],
            'speedup': round(median[DEFAULT_ALLOCATOR] / median['eager'], 3),
            'note': 'the allocator setting alone (MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1073741824 does the '
                    'same for any program): it helps every PyTorch model that allocates large tensors'}
    return results


def receive(worker: multiprocessing.Process, connection) -> object:
    """The worker's next message; exits with an error if the worker died (its traceback is on stderr)."""
    try:
        return connection.recv()
    except EOFError:
        worker.join()
        sys.exit(f'error: a benchmark worker process failed (exit code {worker.exitcode}); see its error above')


def serve_variants(connection, args: argparse.Namespace, job: str, backbone: str, reuse_memory: bool) -> None:
    """A worker process: builds the job's variants (the same weights and frames in every worker: seed 0), sends
    {name: outputs} of a first call of each, then times one call of each variant named on `connection` until None.
    With reuse_memory it makes the scripts' allocator setting and runs every variant; without it, on the CPU, only
    the eager model, named DEFAULT_ALLOCATOR."""
    device = open_device(args.device)
    if reuse_memory:
        reuse_freed_cpu_memory(device)
    torch.manual_seed(0)
    model = MattingRefine(backbone, backbone_scale=args.refine_backbone_scale) if job == 'refine' else \
        MattingBase(backbone)
    if job == 'base':
        src = torch.rand(1, args.chunk, 3, args.height, args.width, device=device)
        chunks, downsample_ratio = args.chunks, 1
    else:
        src = torch.rand(1, args.hd_chunk, 3, 1080, 1920, device=device)
        chunks, downsample_ratio = 1, args.downsample_ratio if job == 'downsample' else 1
    eager = model.eval().to(device)
    if device.type == 'cpu' and not reuse_memory:
        variants = {DEFAULT_ALLOCATOR: torch_step(eager, None, downsample_ratio)}
    elif job == 'base':
        variants = model_variants(args, eager, src, device)
    else:
        variants = {'eager': torch_step(eager, None, downsample_ratio),
                    inference_variant(device): torch_step(prepare_for_inference(copy.deepcopy(eager), device),
                                                          low_precision_dtype(device), downsample_ratio)}
    calls = {name: matting_run(step, src, chunks) for name, step in variants.items()}
    # As float32 numpy arrays: torch tensors would travel through shared memory, which HD outputs can exceed.
    connection.send({name: [np.asarray(output.float().cpu()) for output in call()] for name, call in calls.items()})
    while (name := connection.recv()) is not None:
        connection.send(median_seconds(calls[name], warmup=0, runs=1, device=device))


def matting_run(step: Step, src: torch.Tensor, chunks: int) -> Callable[[], list[torch.Tensor]]:
    """A function that mattes `chunks` chunks of src, carrying the state, and returns every chunk's pha and fgr."""
    def run() -> list[torch.Tensor]:
        state, outputs = None, []
        for _ in range(chunks):
            pha, fgr, state = step(src, state)
            outputs += [pha, fgr]
        return outputs
    return run


if __name__ == '__main__':
    main()
