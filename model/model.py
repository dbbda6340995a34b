"""MattingBase and MattingRefine: video matting without a background input.

src (B, T, 3, H, W) -> encoder and ASPP on every frame -> decoder whose ConvLSTMs carry a state through
time -> 37 channels per frame: alpha (1), foreground residual (3), error (1), hidden features (32).
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.segmentation.deeplabv3 import ASPP

from .convLSTM import State
from .decoderConvLSTM import DecoderConvLSTM
from .mobilenet import MobileNetV2Encoder
from .refiner import Refiner
from .resnet import ResNetEncoder
from .utils import CheckpointError

BACKBONES = ('resnet50', 'resnet101', 'mobilenetv2')
NON_FINITE_ADVICE = 'retrain it with lower learning rates or use an earlier checkpoint'


def check_finite_output(checkpoint: str, *outputs: Tensor, advice: str = NON_FINITE_ADVICE) -> None:
    """CheckpointError naming `checkpoint` unless every value of the model outputs is finite: a diverged training
    run can leave finite weights whose outputs are NaN, which would be written as an empty matte."""
    if not all(torch.isfinite(output).all() for output in outputs):
        raise CheckpointError(f'checkpoint {checkpoint} outputs non-finite values (NaN or inf): {advice}')


def clamp_with_gradient(x: Tensor) -> Tensor:
    """x clamped to 0..1, with the gradient of the identity.

    A plain clamp has zero gradient outside 0..1: early in training from scratch the alpha head can be pushed
    below 0 everywhere and never recover (all-zero alpha). Passing the gradient through lets the loss pull it back.
    """
    clamped = x.clamp(0, 1)
    if not torch.is_grad_enabled():
        return clamped
    return clamped.detach() + (x - x.detach())


class MattingBase(nn.Module):
    """backbone: 'resnet50' | 'resnet101' | 'mobilenetv2'.
    recurrent=False is the "w/o ConvLSTM" ablation: same parameters, ConvLSTM states zero at every frame.
    """

    def __init__(self, backbone: str, recurrent: bool = True):
        super().__init__()
        if backbone in ('resnet50', 'resnet101'):
            self.backbone = ResNetEncoder(backbone)
        elif backbone == 'mobilenetv2':
            self.backbone = MobileNetV2Encoder()
        else:
            raise ValueError(f"unknown backbone '{backbone}': choose one of {', '.join(BACKBONES)}")
        self.aspp = ASPP(self.backbone.out_channels, [3, 6, 9])
        self.aspp.project[3].p = 0.1  # BackgroundMattingV2's ASPP dropout (torchvision's default is 0.5)
        self.decoder = DecoderConvLSTM([256, 128, 64, 48, 37], self.backbone.feature_channels + [3], recurrent)

    def decode(self, src: Tensor, state: Optional[list[State]]) -> tuple[Tensor, list[State]]:
        """src (B, T, 3, H, W) -> the decoder's raw output (B, T, 37, H, W) and the new ConvLSTM state."""
        x4, *shortcuts = self.backbone(src.flatten(0, 1))
        x, state = self.decoder(self.aspp(x4), *shortcuts, time=src.shape[1], state=state)
        return x.unflatten(0, (-1, src.shape[1])), state

    def forward(self, src: Tensor, state: Optional[list[State]] = None
                ) -> tuple[Tensor, Tensor, Tensor, Tensor, list[State]]:
        """src (B, T, 3, H, W) RGB in 0..1, any H, W >= 32; state from the previous chunk of the same video or None.

        Returns pha (B, T, 1, H, W) in 0..1, fgr (B, T, 3, H, W) in 0..1, err (B, T, 1, H, W) in 0..1,
        hid (B, T, 32, H, W) >= 0 and the state: three (h, c) pairs at 1/8, 1/4 and 1/2 resolution.
        """
        x, state = self.decode(src, state)
        pha = clamp_with_gradient(x[:, :, 0:1])
        fgr = clamp_with_gradient(x[:, :, 1:4] + src)
        err = clamp_with_gradient(x[:, :, 4:5])
        hid = x[:, :, 5:].relu()
        return pha, fgr, err, hid, state


class MattingRefine(MattingBase):
    """MattingBase at backbone_scale plus the refiner, for high-resolution video.

    forward(src (B, T, 3, H, W), state) -> pha (B, T, 1, H, W), fgr (B, T, 3, H, W), and at the reduced scale
    pha_sm, fgr_sm, err_sm (B, T, C, h, w), the refined-patch map ref_sm (B, T, 1, H'/4, W'/4) where H', W'
    are H, W rounded up to multiples of 4, and the ConvLSTM state. All images in 0..1.
    """

    def __init__(self, backbone: str, backbone_scale: float = 1 / 4, refine_mode: str = 'sampling',
                 refine_sample_pixels: int = 80_000, refine_threshold: float = 0.1, recurrent: bool = True):
        if not 0 < backbone_scale <= 1 / 2:
            raise ValueError(f'backbone_scale must be in (0, 1/2], got {backbone_scale}')
        super().__init__(backbone, recurrent)
        self.backbone_scale = backbone_scale
        self.refiner = Refiner(refine_mode, refine_sample_pixels, refine_threshold)

    def forward(self, src: Tensor, state: Optional[list[State]] = None):
        batch, time, _, height, width = src.shape
        frames = src.flatten(0, 1)
        # The refiner works on a grid of 4x4 patches: pad to multiples of 4, crop the outputs back.
        frames = F.pad(frames, (0, -width % 4, 0, -height % 4), mode='replicate')
        src_sm = F.interpolate(frames, scale_factor=self.backbone_scale, mode='bilinear', align_corners=False,
                               recompute_scale_factor=True)
        x, state = self.decode(src_sm.unflatten(0, (batch, time)), state)
        x = x.flatten(0, 1)
        pha_sm = clamp_with_gradient(x[:, 0:1])
        fgr_residual_sm = x[:, 1:4]
        err_sm = clamp_with_gradient(x[:, 4:5])
        hid_sm = x[:, 5:].relu()
        pha, fgr_residual, ref_sm = self.refiner(frames, pha_sm, fgr_residual_sm, err_sm, hid_sm)
        pha = clamp_with_gradient(pha)[..., :height, :width]
        fgr = clamp_with_gradient(fgr_residual + frames)[..., :height, :width]
        fgr_sm = clamp_with_gradient(fgr_residual_sm + src_sm)
        outputs = (pha, fgr, pha_sm, fgr_sm, err_sm, ref_sm)
        return (*(y.unflatten(0, (batch, time)) for y in outputs), state)
