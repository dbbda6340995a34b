"""What the scripts share about frames: the image files they read, and the green screen they composite onto."""
import torch

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')  # lower case; names are compared so
GREEN_SCREEN = (120, 255, 155)  # RGB 0..255: BackgroundMattingV2's composite colour


def green_screen_composite(fgr: torch.Tensor, pha: torch.Tensor) -> torch.Tensor:
    """fgr (..., 3, H, W) and pha (..., 1, H, W) or (H, W), in 0..1 -> the foreground over GREEN_SCREEN, (..., 3, H, W)
    in 0..1."""
    green = torch.tensor([channel / 255 for channel in GREEN_SCREEN], device=fgr.device).view(3, 1, 1)
    return fgr * pha + green * (1 - pha)
