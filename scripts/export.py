r"""Export MattingBase, or MattingRefine (--model-refine), to TorchScript or ONNX, with the ConvLSTM state as explicit
inputs and outputs.

    python scripts/export.py --model-checkpoint checkpoint/demo/epoch-0-iter-800.pth --format onnx \
        --output mattingbase.onnx

The exported model computes
    pha, fgr, h1, c1, h2, c2, h3, c3 = model(src, h1, c1, h2, c2, h3, c3)
src (B, T, 3, H, W) RGB in 0..1; pha (B, T, 1, H, W) and fgr (B, T, 3, H, W) in 0..1. T = --seq-length is fixed by
the export (the ConvLSTM loop is unrolled); batch B, height H and width W (each >= 32) are free. For the first
chunk of a video feed zeros: h1, c1 (B, 128, H/8, W/8), h2, c2 (B, 64, H/4, W/4), h3, c3 (B, 48, H/2, W/2), each
size rounded up (zero_state() below); then feed the returned state with the next T frames of the same video.
With --without-convlstm the state is unused (the ONNX graph then takes src alone). With --model-refine the network
runs at --refine-backbone-scale of the frame, so the state has that scale's sizes (zero_state(..., scale)), and
the refiner brings pha and fgr to the frame's size. Its ONNX export keeps the traced height and width (the exporter
fixes the size of the scaled frame; export one file per video size), TorchScript leaves them free; 'sampling' mode
does not export (the number of patches it refines is fixed when traced): 'full' (the default) and 'thresholding' do.

The file is traced on random frames of --resolution, then run (torch.jit.load, or onnxruntime for ONNX) on two
chunks of a random clip at that size and at another batch and size, and compared with PyTorch; it is written
(atomically) only when every difference is within --tolerance. ONNX needs `pip install onnx onnxruntime`.
Without --model-checkpoint the weights are random, to try the export itself. A checkpoint with non-finite weights
(NaN or inf, even in a channel no output uses) is refused, and so is an --output that is the checkpoint itself.
Ctrl-C or SIGTERM writes nothing and exits with status 130 or 143.
"""
import argparse
import importlib.util
import inspect
import io
import math
import os
import sys
import warnings
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from atomic_file import OutputFolderError, atomic_write, check_output_folder  # noqa: E402
from errors import UserError, run_main  # noqa: E402
from input_paths import refuse_outputs_over_inputs  # noqa: E402
from model import BACKBONES, MattingBase, MattingRefine  # noqa: E402
from model.model import STATE_LAYOUT  # noqa: E402
from model.refiner import REFINE_MODES  # noqa: E402
from model.utils import check_finite_output, load_checkpoint_model  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument('--model-backbone', choices=BACKBONES,
                    help="encoder (default: the checkpoint's; needed without --model-checkpoint)")
parser.add_argument('--model-checkpoint', default=None,
                    help='checkpoint to export (default: random weights, to try the export itself)')
parser.add_argument('--without-convlstm', action='store_true', default=None,
                    help='export the ablation, states zero every frame (default: as the checkpoint was trained)')
parser.add_argument('--model-refine', action='store_true', default=None,
                    help='export MattingRefine (default: as the checkpoint was trained; needs a trained refiner)')
parser.add_argument('--refine-backbone-scale', type=float, default=0.25,
                    help='scale the network of MattingRefine runs at, in (0, 0.5]')
parser.add_argument('--refine-mode', default='full', choices=REFINE_MODES,
                    help="which 4x4 patches the refiner recomputes: 'full' (all; the default) or 'thresholding' "
                         "export; 'sampling' does not (its patch count is fixed when traced)")
parser.add_argument('--refine-sample-pixels', type=int, default=80_000, help="pixels refined in 'sampling' mode")
parser.add_argument('--refine-threshold', type=float, default=0.1, help="error threshold in 'thresholding' mode")
parser.add_argument('--format', required=True, choices=('torchscript', 'onnx'), help='what to export to')
parser.add_argument('--output', required=True, help='file to write (.pt for TorchScript, .onnx for ONNX)')
parser.add_argument('--seq-length', type=int, default=1, help='frames per call of the exported model (fixed)')
parser.add_argument('--resolution', type=int, nargs='+', default=(288, 512), metavar='SIZE',
                    help='size of the example frames used for tracing and verification, HEIGHT WIDTH or one number '
                         'for square frames (the export accepts any size)')
parser.add_argument('--opset', type=int, default=17, help='ONNX opset version')
parser.add_argument('--tolerance', type=float, default=1e-4, help='largest accepted difference from PyTorch')

STATE_NAMES = ['h1', 'c1', 'h2', 'c2', 'h3', 'c3']


class ExportError(UserError):
    """An export that cannot be made or does not match PyTorch: the message says what to do."""


class ExplicitStateMatting(nn.Module):
    """MattingBase or MattingRefine with its state as six tensors: forward(src, h1, c1, h2, c2, h3, c3) -> (pha, fgr,
    h1, ..., c3)."""

    def __init__(self, model: MattingBase):
        super().__init__()
        self.model = model

    def forward(self, src: Tensor, h1: Tensor, c1: Tensor, h2: Tensor, c2: Tensor, h3: Tensor, c3: Tensor):
        outputs = self.model(src, [(h1, c1), (h2, c2), (h3, c3)])
        pha, fgr, state = outputs[0], outputs[1], outputs[-1]
        return (pha, fgr, *state[0], *state[1], *state[2])


def load_model(args: argparse.Namespace) -> MattingBase:
    """The model to export in eval mode: --model-checkpoint's, with the settings it records, or random weights."""
    if not args.model_checkpoint:
        if args.model_backbone is None:
            raise ExportError('--model-backbone is needed without --model-checkpoint')
        if args.model_refine:
            raise ExportError('--model-refine needs --model-checkpoint with a trained refiner '
                              '(train.py --model-refine)')
        return MattingBase(args.model_backbone, recurrent=not args.without_convlstm).eval()
    model = load_checkpoint_model(args)
    if args.model_refine and args.refine_mode == 'sampling':
        raise ExportError("--refine-mode sampling does not export: the number of patches it refines is fixed "
                          "when traced; use --refine-mode full or thresholding")
    return model.eval()


def zero_state(batch: int, height: int, width: int, scale: float = 1.0) -> list[Tensor]:
    """The six zero state tensors [h1, c1, h2, c2, h3, c3] that start a video of frames height x width; `scale` is
    MattingRefine's backbone_scale (its network sees the frame padded to multiples of 4, then scaled)."""
    if scale != 1:
        height, width = (math.floor(4 * math.ceil(size / 4) * scale) for size in (height, width))
    state = []
    for channels, stride in STATE_LAYOUT:
        shape = (batch, channels, math.ceil(height / stride), math.ceil(width / stride))
        state += [torch.zeros(shape), torch.zeros(shape)]
    return state


def main(argv: Sequence[str] | None = None) -> None:
    args = parser.parse_args(argv)
    run_main(lambda: export_model(args), 'nothing written')


def export_model(args: argparse.Namespace) -> None:
    if len(args.resolution) > 2:
        raise ExportError(f'--resolution {" ".join(map(str, args.resolution))}: give HEIGHT WIDTH or one size')
    height, width = args.resolution * 2 if len(args.resolution) == 1 else args.resolution
    if os.path.isdir(args.output):
        raise ExportError(f'--output {args.output} is a folder: give a file name')
    refuse_outputs_over_inputs({'--model-checkpoint': args.model_checkpoint}, [args.output],
                               'choose another --output')
    if min(height, width) < 32 or args.seq_length < 1:
        raise ExportError('--resolution must be at least 32 and --seq-length at least 1')
    try:
        check_output_folder(os.path.dirname(os.path.abspath(args.output)), '--output')
    except OutputFolderError:
        raise ExportError(f'--output {args.output}: its folder cannot be created or written; choose another place') \
            from None
    missing = [name for name in ('onnx', 'onnxruntime') if importlib.util.find_spec(name) is None]
    if args.format == 'onnx' and missing:
        raise ExportError(f"ONNX export needs {' and '.join(missing)}: pip install {' '.join(missing)}")
    model = load_model(args)
    wrapper = ExplicitStateMatting(model).eval()
    torch.manual_seed(0)
    scale = getattr(model, 'backbone_scale', 1.0)
    free_size = args.format == 'torchscript' or not isinstance(model, MattingRefine)
    example = (torch.rand(1, args.seq_length, 3, height, width), *zero_state(1, height, width, scale))
    if args.model_checkpoint:
        with torch.no_grad():
            check_finite_output(args.model_checkpoint, *wrapper(*example))
    with torch.no_grad(), warnings.catch_warnings():
        # The deprecated exporters are chosen on purpose (they work from torch 2.1 on): their warnings are not news.
        warnings.filterwarnings('ignore', message=r'`torch\.jit\.\w+` is deprecated', category=FutureWarning)
        warnings.filterwarnings('ignore', message='You are using the legacy TorchScript-based ONNX export')
        try:
            data = export_torchscript(wrapper, example) if args.format == 'torchscript' else \
                export_onnx(wrapper, example, args.opset, free_size)
        except Exception as error:  # each exporter raises its own types, all derived from Exception only
            hint = f'; try another --opset than {args.opset}' if args.format == 'onnx' else ''
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ExportError(f'the {args.format} export failed ({reason}){hint}; nothing written') from None
        run = load_torchscript(data) if args.format == 'torchscript' else load_onnx(data)

    # The traced shape, then another batch and a size that is no multiple of 8: the axes the export leaves free.
    other_size = (height + 11, width + 21) if free_size else (height, width)
    for batch, clip_height, clip_width in ((1, height, width), (2, *other_size)):
        clip = torch.rand(batch, 2 * args.seq_length, 3, clip_height, clip_width)
        try:
            difference = compare(wrapper, run, clip, args.seq_length)
        except Exception as error:  # onnxruntime's and TorchScript's errors derive from Exception only
            raise ExportError(f'the exported model fails on a batch of {batch} at {clip_height}x{clip_width} '
                              f'({type(error).__name__}): its sizes were fixed by tracing; nothing written') from None
        print(f'largest difference from PyTorch, batch {batch} at {clip_height}x{clip_width}, 2 chunks: '
              f'{difference:.2e}')
        if math.isnan(difference):
            raise ExportError(f'the outputs on a batch of {batch} at {clip_height}x{clip_width} hold NaN, so the '
                              f'exported model cannot be checked against PyTorch; nothing written')
        if difference > args.tolerance:
            raise ExportError(f'the exported model differs from PyTorch by {difference:.2e} > --tolerance '
                              f'{args.tolerance}; nothing written')
    with atomic_write(args.output) as file:
        file.write(data)
    print(f'exported {args.output}')


def export_torchscript(wrapper: nn.Module, example: tuple[Tensor, ...]) -> bytes:
    """The traced wrapper, serialised."""
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.trace(wrapper, example), buffer)
    return buffer.getvalue()


def export_onnx(wrapper: nn.Module, example: tuple[Tensor, ...], opset: int, free_size: bool = True) -> bytes:
    """The ONNX model of the wrapper from the TorchScript-based exporter (`dynamo=False` where newer torch
    defaults to dynamo), with free batch, and free height and width when free_size."""
    outputs = ['pha', 'fgr', *[f'{name}_out' for name in STATE_NAMES]]
    dynamic = {name: {0: 'batch', **({3: 'height', 4: 'width'} if free_size else {})} for name in ['src', 'pha', 'fgr']}
    for index, (_, stride) in enumerate(STATE_LAYOUT):
        for name in STATE_NAMES[2 * index:2 * index + 2]:
            axes = {0: 'batch', **({2: f'height/{stride}', 3: f'width/{stride}'} if free_size else {})}
            dynamic.update({name: axes, f'{name}_out': axes})
    options = {'dynamo': False} if 'dynamo' in inspect.signature(torch.onnx.export).parameters else {}
    buffer = io.BytesIO()
    torch.onnx.export(wrapper, example, buffer, input_names=['src', *STATE_NAMES], output_names=outputs,
                      dynamic_axes=dynamic, opset_version=opset, **options)
    return buffer.getvalue()


def load_torchscript(data: bytes) -> Callable[..., list[Tensor]]:
    """A function (src, h1, ..., c3) -> [pha, fgr, h1, ..., c3] running the serialised TorchScript model."""
    module = torch.jit.load(io.BytesIO(data))
    return lambda *inputs: list(module(*inputs))


def load_onnx(data: bytes) -> Callable[..., list[Tensor]]:
    """A function (src, h1, ..., c3) -> [pha, fgr, h1, ..., c3] running the ONNX model with onnxruntime on the CPU."""
    import onnxruntime
    session = onnxruntime.InferenceSession(data, providers=['CPUExecutionProvider'])
    # The exporter drops inputs the graph does not use (the state, with --without-convlstm).
    used = {node.name for node in session.get_inputs()}

    def run(*inputs: Tensor) -> list[Tensor]:
        named = zip(['src', *STATE_NAMES], inputs, strict=True)
        feed = {name: tensor.numpy() for name, tensor in named if name in used}
        return [torch.from_numpy(output) for output in session.run(None, feed)]
    return run


@torch.no_grad()
def compare(wrapper: nn.Module, run: Callable[..., list[Tensor]], clip: Tensor, seq_length: int) -> float:
    """Largest absolute difference of pha, fgr and the state between PyTorch and the exported model over the
    chunks of clip (B, T, 3, H, W), each side starting from zeros and carrying its own state; NaN where either
    side outputs NaN."""
    scale = getattr(wrapper.model, 'backbone_scale', 1.0)
    expected_state = exported_state = zero_state(clip.shape[0], clip.shape[3], clip.shape[4], scale)
    difference = 0.0
    for start in range(0, clip.shape[1], seq_length):
        chunk = clip[:, start:start + seq_length]
        expected = wrapper(chunk, *expected_state)
        exported = run(chunk, *exported_state)
        gaps = [(a - b).abs().max().item() for a, b in zip(expected, exported, strict=True)]
        if any(math.isnan(gap) for gap in gaps):
            return math.nan  # max() would drop it: max(0.0, nan) is 0.0
        difference = max(difference, *gaps)
        expected_state, exported_state = list(expected[2:]), list(exported[2:])
    return difference


if __name__ == '__main__':
    main()
