"""ResNet50 / ResNet101 encoder with a dilated last stage (output stride 16, as DeepLabV3)."""
from torch import Tensor
from torchvision.models.resnet import Bottleneck, ResNet

RESNET_LAYERS = {'resnet50': [3, 4, 6, 3], 'resnet101': [3, 4, 23, 3]}


class ResNetEncoder(ResNet):
    """torchvision's ResNet without the classifier, returning the deepest map and four shortcuts.

    Module names are torchvision's (conv1, bn1, layer1..layer4), which are also BackgroundMattingV2's,
    so its checkpoints and torchvision's ImageNet weights load by name.
    """

    feature_channels = [512, 256, 64]  # channels of the 1/8, 1/4 and 1/2 shortcuts
    out_channels = 2048

    def __init__(self, variant: str = 'resnet50'):
        super().__init__(Bottleneck, RESNET_LAYERS[variant], replace_stride_with_dilation=[False, False, True])
        del self.avgpool
        del self.fc

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """x (N, 3, H, W) -> (x4 at 1/16 with 2048 channels, x3 at 1/8, x2 at 1/4, x1 at 1/2, x0 = x)."""
        x0 = x
        x = self.relu(self.bn1(self.conv1(x)))
        x1 = x
        x = self.layer1(self.maxpool(x))
        x2 = x
        x = self.layer2(x)
        x3 = x
        x = self.layer4(self.layer3(x))
        return x, x3, x2, x1, x0
