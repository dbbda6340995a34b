"""Export MattingBase to TorchScript or ONNX, with the ConvLSTM state as explicit inputs and outputs.

    python scripts/export.py --model-backbone mobilenetv2 --model-checkpoint checkpoint/demo/epoch-6-iter-180.pth \
        --format onnx --output mattingbase.onnx

The exported model computes
    pha, fgr, h1, c1, h2, c2, h3, c3 = model(src, h1, c1, h2, c2, h3, c3)
src (B, T, 3, H, W) RGB in 0..1 with T = --seq-length (fixed by the export: the ConvLSTM loop is unrolled);
batch, height and width are free. The state starts as zeros of shapes (B, 128, H/8, W/8), (B, 64, H/4, W/4) and
(B, 48, H/2, W/2), each size rounded up; feed the returned state back with the next T frames of the same video.
After writing the file (atomically), the script runs it (torch.jit.load, or onnxruntime for ONNX) on two chunks
of a random clip and compares with PyTorch, failing if they differ by more than --tolerance. Without a checkpoint the
weights are random and untrained ResNet101's deepest features reach ~5e4, so float32 rounding alone differs by
~6e-4 there: export a trained checkpoint, or raise --tolerance, to check ResNet101.
"""
import argparse
import inspect
import io
import math
import os
import sys

import torch
from torch import Tensor, nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from atomic_file import atomic_write  # noqa: E402
from model import BACKBONES, MattingBase  # noqa: E402
from model.utils import CheckpointError, load_checkpoint_weights, read_checkpoint  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument('--model-backbone', required=True, choices=BACKBONES, help='encoder')
parser.add_argument('--model-checkpoint', default=None,
                    help='checkpoint to export (default: random weights, to try the export itself)')
parser.add_argument('--without-convlstm', action='store_true', help='export the ablation (states zero every frame)')
parser.add_argument('--format', required=True, choices=('torchscript', 'onnx'), help='what to export to')
parser.add_argument('--output', required=True, help='file to write (.pt for TorchScript, .onnx for ONNX)')
parser.add_argument('--seq-length', type=int, default=1, help='frames per call of the exported model')
parser.add_argument('--resolution', type=int, nargs=2, default=(288, 512), metavar=('HEIGHT', 'WIDTH'),
                    help='size of the example frames used for tracing and verification')
parser.add_argument('--opset', type=int, default=17, help='ONNX opset version')
parser.add_argument('--tolerance', type=float, default=1e-4, help='largest accepted difference from PyTorch')

STATE_NAMES = ['h1', 'c1', 'h2', 'c2', 'h3', 'c3']


class ExplicitStateMatting(nn.Module):
    """MattingBase with its state as six tensors: forward(src, h1, c1, h2, c2, h3, c3) -> (pha, fgr, h1, ..., c3)."""

    def __init__(self, model: MattingBase):
        super().__init__()
        self.model = model

    def forward(self, src: Tensor, h1: Tensor, c1: Tensor, h2: Tensor, c2: Tensor, h3: Tensor, c3: Tensor):
        pha, fgr, _, _, state = self.model(src, [(h1, c1), (h2, c2), (h3, c3)])
        return (pha, fgr, *state[0], *state[1], *state[2])


def zero_state(batch: int, height: int, width: int) -> list[Tensor]:
    """The six zero state tensors of a video of frames height x width."""
    state = []
    for channels, stride in ((128, 8), (64, 4), (48, 2)):
        shape = (batch, channels, math.ceil(height / stride), math.ceil(width / stride))
        state += [torch.zeros(shape), torch.zeros(shape)]
    return state


def main() -> None:
    args = parser.parse_args()
    if os.path.isdir(args.output):
        sys.exit(f'error: --output {args.output} is a folder: give a file name')
    model = MattingBase(args.model_backbone, recurrent=not args.without_convlstm).eval()
    if args.model_checkpoint:
        try:
            checkpoint = read_checkpoint(args.model_checkpoint)
            load_checkpoint_weights(model, args.model_backbone, checkpoint, args.model_checkpoint)
        except CheckpointError as error:
            sys.exit(f'error: {error}')
    wrapper = ExplicitStateMatting(model).eval()
    height, width = args.resolution
    torch.manual_seed(0)
    clip = torch.rand(1, 2 * args.seq_length, 3, height, width)
    example = (clip[:, :args.seq_length], *zero_state(1, height, width))

    with torch.no_grad():
        data = export_torchscript(wrapper, example) if args.format == 'torchscript' else export_onnx(wrapper, example, args.opset)
    with atomic_write(args.output) as file:
        file.write(data)
    run = load_torchscript(args.output) if args.format == 'torchscript' else load_onnx(args.output)
    difference = compare(wrapper, run, clip, args.seq_length)
    print(f'exported {args.output}; largest difference from PyTorch over 2 chunks: {difference:.2e}')
    if difference > args.tolerance:
        sys.exit(f'error: the exported model differs from PyTorch by {difference:.2e} > --tolerance {args.tolerance}')


def export_torchscript(wrapper: nn.Module, example: tuple) -> bytes:
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.trace(wrapper, example), buffer)
    return buffer.getvalue()


def export_onnx(wrapper: nn.Module, example: tuple, opset: int) -> bytes:
    """The TorchScript-based exporter (torch >= 2.1; `dynamo=False` where newer torch defaults to dynamo)."""
    names = ['src', *STATE_NAMES]
    outputs = ['pha', 'fgr', *[f'{name}_out' for name in STATE_NAMES]]
    dynamic = {name: {0: 'batch', 2: 'height', 3: 'width'} for name in [*STATE_NAMES, *outputs[2:]]}
    dynamic.update({name: {0: 'batch', 3: 'height', 4: 'width'} for name in ['src', 'pha', 'fgr']})
    options = {'dynamo': False} if 'dynamo' in inspect.signature(torch.onnx.export).parameters else {}
    buffer = io.BytesIO()
    torch.onnx.export(wrapper, example, buffer, input_names=names, output_names=outputs, dynamic_axes=dynamic,
                      opset_version=opset, **options)
    return buffer.getvalue()


def load_torchscript(path: str):
    module = torch.jit.load(path)
    return lambda *inputs: [output for output in module(*inputs)]


def load_onnx(path: str):
    import onnxruntime
    session = onnxruntime.InferenceSession(path, providers=['CPUExecutionProvider'])
    names = [node.name for node in session.get_inputs()]
    return lambda *inputs: [torch.from_numpy(output) for output in
                            session.run(None, {name: tensor.numpy() for name, tensor in zip(names, inputs)})]


@torch.no_grad()
def compare(wrapper: nn.Module, run, clip: Tensor, seq_length: int) -> float:
    """Largest absolute difference of pha, fgr and the state between PyTorch and the exported model over the clip's
    chunks, each side carrying its own state."""
    expected_state = exported_state = zero_state(clip.shape[0], clip.shape[3], clip.shape[4])
    difference = 0.0
    for start in range(0, clip.shape[1], seq_length):
        chunk = clip[:, start:start + seq_length]
        expected = wrapper(chunk, *expected_state)
        exported = run(chunk, *exported_state)
        difference = max(difference, *((a - b).abs().max().item() for a, b in zip(expected, exported)))
        expected_state, exported_state = list(expected[2:]), list(exported[2:])
    return difference


if __name__ == '__main__':
    main()
