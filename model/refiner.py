"""BackgroundMattingV2's refiner, taking the source frame only (no background input).

The base network runs at a reduced scale. The refiner upsamples its alpha and foreground residual to
full resolution and recomputes selected 4x4 patches there from the source pixels and the base's hidden
features. Which patches: all ('full'), the refine_sample_pixels / 16 with the largest predicted error
('sampling'), or those whose predicted error exceeds refine_threshold ('thresholding').
"""
import torch
import torch.nn.functional as F
from torch import Tensor, nn

REFINE_MODES = ('full', 'sampling', 'thresholding')


class Refiner(nn.Module):
    def __init__(self, mode: str, sample_pixels: int, threshold: float, prevent_oversampling: bool = True):
        super().__init__()
        if mode not in REFINE_MODES:
            raise ValueError(f"unknown refine_mode '{mode}': choose one of {', '.join(REFINE_MODES)}")
        self.mode = mode
        self.sample_pixels = sample_pixels
        self.threshold = threshold
        self.prevent_oversampling = prevent_oversampling
        channels = [32, 24, 16, 12, 4]
        # Unpadded 3x3 convolutions: an 8x8 crop at half resolution shrinks to 4x4, an 8x8 crop at full
        # resolution (a 4x4 patch plus a 2-pixel border) shrinks to the 4x4 patch itself.
        self.conv1 = nn.Conv2d(channels[0] + 4 + 3, channels[1], 3, bias=False)
        self.bn1 = nn.BatchNorm2d(channels[1])
        self.conv2 = nn.Conv2d(channels[1], channels[2], 3, bias=False)
        self.bn2 = nn.BatchNorm2d(channels[2])
        self.conv3 = nn.Conv2d(channels[2] + 3, channels[3], 3, bias=False)
        self.bn3 = nn.BatchNorm2d(channels[3])
        self.conv4 = nn.Conv2d(channels[3], channels[4], 3, bias=True)
        self.relu = nn.ReLU(True)

    def forward(self, src: Tensor, pha: Tensor, fgr: Tensor, err: Tensor, hid: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """src (N, 3, H, W) in 0..1 with H, W multiples of 4; the base's pha (N, 1, h, w), foreground residual
        fgr (N, 3, h, w), err (N, 1, h, w) and hid (N, 32, h, w) at reduced scale.

        Returns alpha (N, 1, H, W), foreground residual (N, 3, H, W), both unclamped, and the map of
        refined patches ref (N, 1, H/4, W/4) in {0, 1}.
        """
        full_size = src.shape[2:]
        half_size = (full_size[0] // 2, full_size[1] // 2)
        quarter_size = (full_size[0] // 4, full_size[1] // 4)
        features = F.interpolate(torch.cat([hid, pha, fgr], dim=1), half_size, mode='bilinear', align_corners=False)
        src_half = F.interpolate(src, half_size, mode='bilinear', align_corners=False)

        if self.mode == 'full':
            x = torch.cat([F.pad(features, (3, 3, 3, 3)), F.pad(src_half, (3, 3, 3, 3))], dim=1)
            x = self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))))
            x = F.interpolate(x, (full_size[0] + 4, full_size[1] + 4), mode='nearest')
            x = self.refine_tail(x, F.pad(src, (2, 2, 2, 2)))
            ref = torch.ones((src.shape[0], 1, *quarter_size), device=src.device, dtype=src.dtype)
            return x[:, :1], x[:, 1:], ref

        out = F.interpolate(torch.cat([pha, fgr], dim=1), full_size, mode='bilinear', align_corners=False)
        ref = self.select_refinement_regions(F.interpolate(err, quarter_size, mode='bilinear', align_corners=False))
        idx = torch.nonzero(ref.squeeze(1), as_tuple=True)
        # A traced model must keep the refinement whatever number of patches the example frames selected.
        if torch.jit.is_tracing() or idx[0].numel() > 0:
            x = torch.cat([crop_patches(features, idx, 2, 3), crop_patches(src_half, idx, 2, 3)], dim=1)
            x = self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))))
            x = F.interpolate(x, (8, 8), mode='nearest')
            x = self.refine_tail(x, crop_patches(src, idx, 4, 2))
            out = replace_patches(out, x.to(out.dtype), idx)
        return out[:, :1], out[:, 1:], ref

    def refine_tail(self, x: Tensor, src: Tensor) -> Tensor:
        """Full-resolution stage: upsampled features (K, 16, S + 4, S + 4), padded source (K, 3, S + 4, S + 4)
        -> alpha and foreground residual (K, 4, S, S)."""
        x = self.relu(self.bn3(self.conv3(torch.cat([x, src], dim=1))))
        return self.conv4(x)

    def select_refinement_regions(self, err: Tensor) -> Tensor:
        """err (N, 1, H/4, W/4) in 0..1 -> (N, 1, H/4, W/4) with 1 where a 4x4 patch is refined."""
        if self.mode == 'thresholding':
            return (err > self.threshold).to(err.dtype)
        n, _, height, width = err.shape
        err = err.flatten(1)
        count = min(self.sample_pixels // 16, err.shape[1])
        ref = torch.zeros_like(err).scatter_(1, err.topk(count, dim=1, sorted=False).indices, 1.0)
        if self.prevent_oversampling:
            ref = ref * (err > 0).to(err.dtype)
        return ref.view(n, 1, height, width)


def crop_patches(x: Tensor, idx: tuple[Tensor, Tensor, Tensor], size: int, padding: int) -> Tensor:
    """x (N, C, H, W); idx (n, i, j) indices of K patches on a grid of `size` pixels.
    Returns (K, C, size + 2 * padding, size + 2 * padding): each patch with `padding` pixels of context."""
    if padding:
        x = F.pad(x, (padding,) * 4)
    window = size + 2 * padding
    patches = x.permute(0, 2, 3, 1).unfold(1, window, size).unfold(2, window, size)
    return patches[idx[0], idx[1], idx[2]]


def replace_patches(x: Tensor, patches: Tensor, idx: tuple[Tensor, Tensor, Tensor]) -> Tensor:
    """x (N, C, H, W) with H, W multiples of 4; patches (K, C, 4, 4) written at grid positions idx. Returns a new
    tensor. One index_copy on the flattened grid rather than indexed assignment, whose trace fixes K when K is 1."""
    n, c, height, width = x.shape
    rows, columns = height // 4, width // 4
    grid = x.view(n, c, rows, 4, columns, 4).permute(0, 2, 4, 1, 3, 5).reshape(n * rows * columns, c, 4, 4)
    grid = grid.index_copy(0, (idx[0] * rows + idx[1]) * columns + idx[2], patches)
    return grid.view(n, rows, columns, c, 4, 4).permute(0, 3, 1, 4, 2, 5).reshape(n, c, height, width)
