"""MobileNetV2 encoder with dilated last blocks (output stride 16), as BackgroundMattingV2."""
from torch import Tensor
from torchvision.models.mobilenetv2 import MobileNetV2


class MobileNetV2Encoder(MobileNetV2):
    """torchvision's MobileNetV2 without its last 1x1 block and classifier.

    Returns the deepest map and the shortcuts at 1/8, 1/4, 1/2 and full size, like ResNetEncoder.
    """

    feature_channels = [32, 24, 16]  # channels of the 1/8, 1/4 and 1/2 shortcuts
    out_channels = 320

    def __init__(self):
        super().__init__()
        self.features = self.features[:-1]
        # Stride 1 plus dilation 2 in the last stage keeps the deepest map at 1/16 with the same receptive field.
        self.features[14].conv[1][0].stride = (1, 1)
        for block in self.features[15:]:
            block.conv[1][0].dilation = (2, 2)
            block.conv[1][0].padding = (2, 2)
        del self.classifier

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """x (N, 3, H, W) -> (x4 at 1/16 with 320 channels, x3 at 1/8, x2 at 1/4, x1 at 1/2, x0 = x)."""
        x0 = x
        x1 = self.features[0:2](x)
        x2 = self.features[2:4](x1)
        x3 = self.features[4:7](x2)
        x4 = self.features[7:](x3)
        return x4, x3, x2, x1, x0
