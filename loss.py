"""The training losses: matting_loss for MattingBase, refine_loss for MattingRefine (train.py, the benchmarks and
the scripts import them from here)."""
import kornia
import torch
import torch.nn.functional as F


def image_terms(pred_pha: torch.Tensor, pred_fgr: torch.Tensor, true_pha: torch.Tensor,
                true_fgr: torch.Tensor) -> dict[str, torch.Tensor]:
    """L1 on alpha, L1 on the Sobel gradients of alpha and L1 on the foreground where the true alpha > 0, each a
    mean over all frames. pha (B, T, 1, H, W), fgr (B, T, 3, H, W), all in 0..1, fp32."""
    foreground = (true_pha > 0).to(true_fgr.dtype)
    return {
        'pha_l1': F.l1_loss(pred_pha, true_pha),
        'pha_sobel': F.l1_loss(kornia.filters.sobel(pred_pha.flatten(0, 1)),
                               kornia.filters.sobel(true_pha.flatten(0, 1))),
        'fgr_l1': F.l1_loss(pred_fgr * foreground, true_fgr * foreground),
    }


PHA_LOSSES = ('l1', 'l1+l2')


def matting_loss(pred_pha: torch.Tensor, pred_fgr: torch.Tensor, pred_err: torch.Tensor,
                 true_pha: torch.Tensor, true_fgr: torch.Tensor, pha_loss: str = 'l1') -> dict[str, torch.Tensor]:
    """The original report's loss. pha/err (B, T, 1, H, W), fgr (B, T, 3, H, W), all in 0..1, fp32.

    image_terms, and L2 of the predicted error against the actual |alpha error| (detached: the error head learns to
    predict it, it does not push the alpha). Each term is a mean over all frames; 'total' is their sum.
    pha_loss 'l1+l2' adds L2 of alpha ('pha_l2'). Where a pixel is the person with probability p < 0.5, L1 alone is
    lowest at alpha 0 whatever p is, so a cue that moves p from 0.3 to 0.4 lowers nothing; with the L2 term the
    optimum is max(0, 2p - 0.5), which follows p above 0.25 and so rewards a weak cue while it grows.
    """
    if pha_loss not in PHA_LOSSES:
        raise ValueError(f'pha_loss {pha_loss!r}: use one of {PHA_LOSSES}')
    losses = image_terms(pred_pha, pred_fgr, true_pha, true_fgr)
    if pha_loss == 'l1+l2':
        losses['pha_l2'] = F.mse_loss(pred_pha, true_pha)
    losses['err_l2'] = F.mse_loss(pred_err, (pred_pha - true_pha).abs().detach())
    losses['total'] = sum(losses.values())
    return losses


def refine_loss(pred_pha: torch.Tensor, pred_fgr: torch.Tensor, pred_pha_sm: torch.Tensor, pred_fgr_sm: torch.Tensor,
                pred_err_sm: torch.Tensor, true_pha: torch.Tensor, true_fgr: torch.Tensor) -> dict[str, torch.Tensor]:
    """BackgroundMattingV2's second-stage loss, for MattingRefine. The refined pha (B, T, 1, H, W) and fgr
    (B, T, 3, H, W), the base network's pha_sm, fgr_sm, err_sm (B, T, C, h, w) at its reduced scale, the targets at
    full size; all in 0..1, fp32.

    image_terms on the refined outputs ('refined_*'), and matting_loss on the coarse outputs against the targets
    resized to the coarse size ('coarse_*', its err_l2 included: the error map chooses the patches to refine).
    'total' is the sum of all terms.
    """
    coarse_size = pred_pha_sm.shape[-2:]
    # Bilinear without antialiasing: the same resize that makes the base network's input from the source.
    true_pha_sm, true_fgr_sm = (F.interpolate(true.flatten(0, 1), coarse_size, mode='bilinear', align_corners=False)
                                .unflatten(0, true.shape[:2]) for true in (true_pha, true_fgr))
    coarse = matting_loss(pred_pha_sm, pred_fgr_sm, pred_err_sm, true_pha_sm, true_fgr_sm)
    losses = {f'refined_{name}': value for name, value in image_terms(pred_pha, pred_fgr, true_pha, true_fgr).items()}
    losses.update({f'coarse_{name}': value for name, value in coarse.items() if name != 'total'})
    losses['total'] = sum(losses.values())
    return losses
