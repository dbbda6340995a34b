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

BACKBONES = ('resnet50', 'resnet101', 'mobilenetv2')
# Channels and stride (the frame size over the state's) of the ConvLSTM states (h1, c1), (h2, c2), (h3, c3): the
# outputs of the decoder's three upsampling blocks.
STATE_LAYOUT = [(128, 8), (64, 4), (48, 2)]


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
        channels = [256, *(state_channels for state_channels, _ in STATE_LAYOUT), 37]
        self.decoder = DecoderConvLSTM(channels, self.backbone.feature_channels + [3], recurrent)

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


def run_model(model: MattingBase, src: Tensor, state: Optional[list[State]], downsample_ratio: float = 1.0
              ) -> tuple[Tensor, Tensor, list[State]]:
    """Matte one chunk as inference.py does: src (B, T, 3, H, W) in 0..1 and the state of the previous chunk (None:
    the video starts) -> pha (B, T, 1, H, W), fgr (B, T, 3, H, W) in 0..1 and the new state (see matte_chunk)."""
    pha, fgr, _, state = matte_chunk(model, src, state, downsample_ratio)
    return pha, fgr, state


def matte_chunk(model: MattingBase, src: Tensor, state: Optional[list[State]], downsample_ratio: float = 1.0
                ) -> tuple[Tensor, Tensor, Tensor, list[State]]:
    """src (B, T, 3, H, W) in 0..1 and the state of the previous chunk (None: the video starts) -> pha
    (B, T, 1, H, W) and fgr (B, T, 3, H, W) at full size, the predicted error (B, T, 1, h, w) at the size the
    network ran at, all in 0..1, and the new state.

    MattingRefine brings its own full-resolution output. MattingBase runs at downsample_ratio of the frame size
    (1: as it is) and its alpha and foreground residual are upsampled bilinearly.
    """
    if isinstance(model, MattingRefine):
        pha, fgr, _, _, err, _, state = model(src, state)
        return pha, fgr, err, state
    if downsample_ratio == 1:
        pha, fgr, err, _, state = model(src, state)
        return pha, fgr, err, state
    batch, time = src.shape[:2]
    frames = src.flatten(0, 1)
    small = F.interpolate(frames, scale_factor=downsample_ratio, mode='bilinear', align_corners=False,
                          recompute_scale_factor=True)
    pha, fgr, err, _, state = model(small.unflatten(0, (batch, time)), state)
    size = frames.shape[-2:]
    # Upsample the foreground's residual, not the foreground, so full-resolution detail comes from the source.
    residual = F.interpolate(fgr.flatten(0, 1) - small, size, mode='bilinear', align_corners=False)
    pha = F.interpolate(pha.flatten(0, 1), size, mode='bilinear', align_corners=False).clamp(0, 1)
    fgr = (frames + residual).clamp(0, 1)
    return pha.unflatten(0, (batch, time)), fgr.unflatten(0, (batch, time)), err, state
