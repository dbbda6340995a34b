"""The decoder with a ConvLSTM after each upsampling block: the memory that rebuilds the background."""
from typing import Optional

from torch import Tensor

from .convLSTM import ConvLSTM, State
from .decoder import Decoder


class DecoderConvLSTM(Decoder):
    """Decoder whose three upsampling blocks each end in a ConvLSTM (hidden channels channels[1..3]).

    Convolutions run on all B*T frames at once; only the ConvLSTMs step through time.
    recurrent=False keeps the same parameters but starts every frame from the zero state.
    """

    def __init__(self, channels: list[int], feature_channels: list[int], recurrent: bool = True):
        super().__init__(channels, feature_channels)
        self.convlstm1 = ConvLSTM(channels[1], channels[1], recurrent=recurrent)
        self.convlstm2 = ConvLSTM(channels[2], channels[2], recurrent=recurrent)
        self.convlstm3 = ConvLSTM(channels[3], channels[3], recurrent=recurrent)

    def forward(self, x4: Tensor, x3: Tensor, x2: Tensor, x1: Tensor, x0: Tensor,
                time: int, state: Optional[list[Optional[State]]] = None) -> tuple[Tensor, list[State]]:
        """Encoder outputs of B*T frames (batch-major, time-minor), the sequence length T and the state of the
        three ConvLSTMs (None or a list of three (h, c) or None) -> ((B*T, channels[4], H, W), new state)."""
        if state is None:
            state = [None, None, None]
        new_state = []
        x = x4
        for index, shortcut in zip((1, 2, 3), (x3, x2, x1)):
            x = self.block(index, x, shortcut)
            convlstm = getattr(self, f'convlstm{index}')
            h, layer_state = convlstm(x.unflatten(0, (-1, time)), state[index - 1])
            x = h.flatten(0, 1)
            new_state.append(layer_state)
        return self.output(x, x0), new_state
