"""BackgroundMattingV2's single-image decoder: three upsampling blocks and an output convolution."""
import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Decoder(nn.Module):
    """channels: output channels of the ASPP and of each block, e.g. [256, 128, 64, 48, 37];
    feature_channels: channels of the shortcuts at 1/8, 1/4, 1/2 and full size, e.g. [512, 256, 64, 3].

    Each block upsamples 2x (bilinear, to the shortcut's exact size, so any H, W works), concatenates the
    shortcut, then 3x3 conv, BN, ReLU. The output block concatenates the input frame and convolves to
    channels[4] without normalisation.
    """

    def __init__(self, channels: list[int], feature_channels: list[int]):
        super().__init__()
        self.conv1 = nn.Conv2d(feature_channels[0] + channels[0], channels[1], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels[1])
        self.conv2 = nn.Conv2d(feature_channels[1] + channels[1], channels[2], 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels[2])
        self.conv3 = nn.Conv2d(feature_channels[2] + channels[2], channels[3], 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels[3])
        self.conv4 = nn.Conv2d(feature_channels[3] + channels[3], channels[4], 3, padding=1)
        self.relu = nn.ReLU(True)

    @staticmethod
    def upsample_to(x: Tensor, like: Tensor) -> Tensor:
        """x (N, C, h, w) bilinearly resized to the height and width of `like` (N, C', H, W)."""
        return F.interpolate(x, size=like.shape[2:], mode='bilinear', align_corners=False)

    def upsample_concat(self, x: Tensor, shortcut: Tensor) -> Tensor:
        """x (N, C, h, w), shortcut (N, C', H, W) -> (N, C + C', H, W)."""
        return torch.cat([self.upsample_to(x, shortcut), shortcut], dim=1)

    def block(self, index: int, x: Tensor, shortcut: Tensor) -> Tensor:
        """Upsampling block `index` (1, 2 or 3): upsample, concat shortcut, conv, BN, ReLU."""
        conv, bn = getattr(self, f'conv{index}'), getattr(self, f'bn{index}')
        return self.relu(bn(conv(self.upsample_concat(x, shortcut))))

    def output(self, x: Tensor, x0: Tensor) -> Tensor:
        """x (N, channels[3], H/2, W/2), the frames x0 (N, 3, H, W) -> (N, channels[4], H, W): conv4 of the upsampled
        x concatenated with x0, computed as the sum of conv4's two input slices applied to each, which is the same
        function without writing the full-resolution concatenation (the largest tensor of the forward pass)."""
        x = self.upsample_to(x, x0)
        channels = x.shape[1]
        out = F.conv2d(x, self.conv4.weight[:, :channels], self.conv4.bias, padding=self.conv4.padding)
        # In place is safe for autograd: a convolution's backward does not read its output.
        return out.add_(F.conv2d(x0, self.conv4.weight[:, channels:], padding=self.conv4.padding))

    def forward(self, x4: Tensor, x3: Tensor, x2: Tensor, x1: Tensor, x0: Tensor) -> Tensor:
        """Encoder outputs of N frames (ASPP output x4 at 1/16, shortcuts x3..x0) -> (N, channels[4], H, W)."""
        x = self.block(1, x4, x3)
        x = self.block(2, x, x2)
        x = self.block(3, x, x1)
        return self.output(x, x0)
