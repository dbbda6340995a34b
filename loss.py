"""The training loss of MattingBase: train.py, the benchmarks and the scripts import it from here."""
import kornia
import torch
import torch.nn.functional as F


def matting_loss(pred_pha: torch.Tensor, pred_fgr: torch.Tensor, pred_err: torch.Tensor,
                 true_pha: torch.Tensor, true_fgr: torch.Tensor) -> dict[str, torch.Tensor]:
    """The original report's loss. pha/err (B, T, 1, H, W), fgr (B, T, 3, H, W), all in 0..1, fp32.

    L1 on alpha, L1 on the Sobel gradients of alpha, L1 on the foreground where the true alpha > 0, and L2 of the
    predicted error against the actual |alpha error| (detached: the error head learns to predict it, it does not
    push the alpha). Each term is a mean over all frames; 'total' is their sum.
    """
    foreground = (true_pha > 0).to(true_fgr.dtype)
    losses = {
        'pha_l1': F.l1_loss(pred_pha, true_pha),
        'pha_sobel': F.l1_loss(kornia.filters.sobel(pred_pha.flatten(0, 1)),
                               kornia.filters.sobel(true_pha.flatten(0, 1))),
        'fgr_l1': F.l1_loss(pred_fgr * foreground, true_fgr * foreground),
        'err_l2': F.mse_loss(pred_err, (pred_pha - true_pha).abs().detach()),
    }
    losses['total'] = sum(losses.values())
    return losses
