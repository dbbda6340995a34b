"""Convolutional LSTM (Shi et al., NeurIPS 2015) with an explicit state.

    i, f, o = sigmoid(W * [x, h])      g = tanh(W * [x, h])
    c' = f * c + i * g                 h' = o * tanh(c')

One 3x3 same-padding convolution over the concatenation [x, h] gives the four gates. Its weight is applied
in two parts: the input part on all T frames at once (it does not depend on the state), the hidden part
frame by frame. That is the same function as convolving the concatenation, with one sequential
convolution per frame instead of two.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

State = tuple[Tensor, Tensor]


class ConvLSTMCell(nn.Module):
    def __init__(self, input_channels: int, hidden_channels: int, kernel_size: int = 3):
        super().__init__()
        self.input_channels = input_channels
        self.hidden_channels = hidden_channels
        self.conv = nn.Conv2d(input_channels + hidden_channels, 4 * hidden_channels, kernel_size,
                              padding=kernel_size // 2)
        # Forget-gate bias 1 (Jozefowicz et al., ICML 2015): the cell starts by keeping about 73% of itself per frame
        # (sigmoid(1)) instead of 50%, so gradients reach earlier frames from the first step of training.
        with torch.no_grad():
            self.conv.bias[hidden_channels:2 * hidden_channels] = 1

    def input_gates(self, x: Tensor) -> Tensor:
        """x (N, C_in, H, W) -> the input's contribution to the gates (N, 4 * C_hid, H, W), bias included."""
        weight = self.conv.weight[:, :self.input_channels]
        return F.conv2d(x, weight, self.conv.bias, padding=self.conv.padding)

    def step(self, x_gates: Tensor, state: State) -> State:
        """One time step. x_gates from input_gates(); state (h, c), each (N, C_hid, H, W). Returns the new (h, c):
        h in x_gates' dtype (it feeds the convolutions), c at least fp32 (see gated_update)."""
        h, c = state
        weight = self.conv.weight[:, self.input_channels:]
        return gated_update(x_gates, F.conv2d(h.to(x_gates.dtype), weight, padding=self.conv.padding), c)

    def first_step(self, x_gates: Tensor) -> State:
        """step() from the zero state without materialising it (an export would fix the zeros' size)."""
        return gated_update(x_gates, None, None)

    def forward(self, x: Tensor, state: Optional[State] = None) -> State:
        """x (N, C_in, H, W), state (h, c) or None for zeros. Returns the new (h, c)."""
        x_gates = self.input_gates(x)
        return self.step(x_gates, state if state is not None else self.zero_state(x_gates))

    def zero_state(self, x_gates: Tensor) -> State:
        """Zeros shaped like one frame's state, on the gates' device: h in their dtype, c in fp32 or wider."""
        n, _, height, width = x_gates.shape
        h = x_gates.new_zeros(n, self.hidden_channels, height, width)
        return h, h.to(torch.promote_types(h.dtype, torch.float32))


def gated_update(x_gates: Tensor, h_gates: Optional[Tensor], c: Optional[Tensor]) -> State:
    """The LSTM update from the input's and the hidden state's contributions to the gates (None: zero state).

    Under fp16/bf16 autocast the gates and the cell state are computed in fp32: the cell is a running sum over the
    whole clip, and in bf16 (8 bits of mantissa) 1 + 1e-3 == 1, so small per-frame updates of a remembered
    background would vanish. h returns in the gates' dtype, which the next convolutions take.
    """
    dtype = torch.promote_types(x_gates.dtype, torch.float32)
    gates = x_gates.to(dtype) if h_gates is None else x_gates.to(dtype) + h_gates.to(dtype)
    i, f, o, g = gates.chunk(4, dim=1)
    update = torch.sigmoid(i) * torch.tanh(g)
    c = update if c is None else torch.sigmoid(f) * c.to(dtype) + update
    h = torch.sigmoid(o) * torch.tanh(c)
    return h.to(x_gates.dtype), c


class ConvLSTM(nn.Module):
    """A ConvLSTM layer over a sequence.

    forward(x (B, T, C_in, H, W), state) -> (h for every frame (B, T, C_hid, H, W), last (h, c)).
    With recurrent=False each frame starts from the zero state (the "w/o ConvLSTM" ablation): the
    parameters are the same, but a frame's output does not depend on earlier frames and `state` is ignored.
    """

    def __init__(self, input_channels: int, hidden_channels: int, kernel_size: int = 3, recurrent: bool = True):
        super().__init__()
        self.cell = ConvLSTMCell(input_channels, hidden_channels, kernel_size)
        self.recurrent = recurrent

    def forward(self, x: Tensor, state: Optional[State] = None) -> tuple[Tensor, State]:
        # (-1, time), not (batch, time): the ONNX exporter records the sizes given here as constants.
        time = x.shape[1]
        x_gates = self.cell.input_gates(x.flatten(0, 1))
        if not self.recurrent:
            h, c = self.cell.first_step(x_gates)
            h, c = h.unflatten(0, (-1, time)), c.unflatten(0, (-1, time))
            return h, (h[:, -1], c[:, -1])
        x_gates = x_gates.unflatten(0, (-1, time))
        if state is None:
            state = self.cell.zero_state(x_gates[:, 0])
        hidden = []
        # unbind, not x_gates[:, t]: the backward of T indexings would fill T zero tensors of x_gates' full size.
        for frame_gates in x_gates.unbind(1):
            state = self.cell.step(frame_gates, state)
            hidden.append(state[0])
        return torch.stack(hidden, dim=1), state
