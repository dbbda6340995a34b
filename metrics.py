"""Matting metrics of Rhemann et al. (CVPR 2009) as in the BackgroundMattingV2 / RobustVideoMatting evaluations.

Alpha mattes are float arrays (H, W) in 0..1, numpy arrays or torch tensors (any device, any float dtype). They
are converted to float32 (as the reference evaluation reads 8-bit PNGs), sums are accumulated in float64, and each
metric returns a Python float at the published scale: MAD x1e3, MSE x1e3, Grad /1e3, Conn /1e3, dtSSD x1e2.
Integer input (e.g. uint8 in 0..255) raises TypeError and values outside 0..1 or NaN raise ValueError rather than
being silently mis-scaled; mattes of different shapes raise ValueError. Foreground images are channels first,
(3, H, W) in 0..1, like the model's fgr output.

    import metrics
    metrics.mad(pred, true); metrics.mse(pred, true); metrics.grad(pred, true); metrics.conn(pred, true)
    metrics.dtssd(pred_t, pred_tm1, true_t, true_tm1)
    metrics.fgr_mad(pred_fgr, true_fgr, true_pha); metrics.fgr_mse(pred_fgr, true_fgr, true_pha)
    metrics.frame_metrics(pred, true, pred_prev, true_prev)  # {'MAD': ..., 'dtSSD': None on a first frame}
"""
import math
from typing import Dict, Optional, Union

import cv2
import numpy as np
import torch

Image = Union[np.ndarray, torch.Tensor]

ALPHA_METRICS = ('MAD', 'MSE', 'Grad', 'Conn', 'dtSSD')

# Full-frame work runs over strips of rows: 1080p float temporaries cost more in page faults than in arithmetic,
# while strip-sized ones are reused by the allocator and stay in cache.
STRIP_ROWS = 64


def _gaussian_derivative_filters(sigma: float = 1.4, epsilon: float = 1e-2):
    """1-D factors of the L2-normalised 2-D first-order Gaussian derivative filter: (gaussian, derivative)."""
    half = math.ceil(sigma * math.sqrt(-2 * math.log(math.sqrt(2 * math.pi) * sigma * epsilon)))
    x = np.arange(-half, half + 1, dtype=np.float64)
    gaussian = np.exp(-x ** 2 / (2 * sigma ** 2)) / (sigma * math.sqrt(2 * math.pi))
    derivative = -x * gaussian / sigma ** 2
    # The 2-D filter is the outer product, so its L2 norm is the product of the factors' norms.
    return ((gaussian / np.linalg.norm(gaussian)).astype(np.float32),
            (derivative / np.linalg.norm(derivative)).astype(np.float32))


GAUSSIAN, DERIVATIVE = _gaussian_derivative_filters()
HALF_SIZE = len(GAUSSIAN) // 2
# A pixel passes threshold t when its value >= t in float32, so a matte value 0.7 passes the threshold 0.7.
THRESHOLDS = [np.float32(i / 10) for i in range(11)]
LEVEL_OF_COUNT = np.zeros(256, np.float32)
LEVEL_OF_COUNT[:11] = THRESHOLDS
# cv2.threshold keeps values strictly above its threshold; Conn keeps differences >= 0.15.
PHI_CUT = float(np.nextafter(np.float32(0.15), np.float32(0)))


def mad(pred: Image, true: Image) -> float:
    """Mean absolute difference x 1e3 of two mattes (H, W) in 0..1."""
    return _mad(*_mattes(pred=pred, true=true))


def mse(pred: Image, true: Image) -> float:
    """Mean squared difference x 1e3 of two mattes (H, W) in 0..1."""
    return _mse(*_mattes(pred=pred, true=true))


def grad(pred: Image, true: Image) -> float:
    """Gradient error / 1e3 of two mattes (H, W) in 0..1.

    Both mattes are min-max normalised (a constant matte becomes zeros), their gradient magnitudes taken with
    first-order Gaussian derivative filters (sigma 1.4, half size from epsilon 1e-2, L2-normalised, border
    replicate), and the squared differences of the magnitudes summed.
    """
    return _grad(*_mattes(pred=pred, true=true))


def conn(pred: Image, true: Image) -> float:
    """Connectivity error / 1e3 of two mattes (H, W) in 0..1.

    For thresholds t = 0.1, ..., 1 take the largest 4-connected component of (true >= t) & (pred >= t) (ties go
    to the component met first in raster order). A pixel's level is the last threshold before it first leaves
    that component (1 if it never does); phi = 1 - (alpha - level) where alpha - level >= 0.15, else 1; the
    error is the sum over pixels of |phi(pred) - phi(true)|.
    """
    return _conn(*_mattes(pred=pred, true=true))


def dtssd(pred_t: Image, pred_tm1: Image, true_t: Image, true_tm1: Image) -> float:
    """Temporal coherence error x 1e2 of frames t and t - 1, each a matte (H, W) in 0..1.

    sqrt(sum(((pred_t - pred_tm1) - (true_t - true_tm1)) ** 2) / pixels): zero when the prediction changes
    exactly as the truth does.
    """
    return _dtssd(*_mattes(pred_t=pred_t, pred_tm1=pred_tm1, true_t=true_t, true_tm1=true_tm1))


def frame_metrics(pred: Image, true: Image, pred_prev: Optional[Image] = None,
                  true_prev: Optional[Image] = None) -> Dict[str, Optional[float]]:
    """All alpha metrics of one frame, keyed by ALPHA_METRICS.

    pred, true: mattes (H, W) in 0..1; pred_prev, true_prev: the previous frame's, or None on a clip's first
    frame, where dtSSD is None.
    """
    if (pred_prev is None) != (true_prev is None):
        raise ValueError('frame_metrics needs both pred_prev and true_prev, or neither on a first frame')
    if pred_prev is None:
        pred, true = _mattes(pred=pred, true=true)
        temporal = None
    else:
        pred, true, pred_prev, true_prev = _mattes(pred=pred, true=true, pred_prev=pred_prev, true_prev=true_prev)
        temporal = _dtssd(pred, pred_prev, true, true_prev)
    return {'MAD': _mad(pred, true), 'MSE': _mse(pred, true), 'Grad': _grad(pred, true),
            'Conn': _conn(pred, true), 'dtSSD': temporal}


def fgr_mad(pred_fgr: Image, true_fgr: Image, true_pha: Image) -> Optional[float]:
    """Foreground MAD x 1e3 over the pixels where true_pha > 0; None when there are none.

    pred_fgr, true_fgr: (3, H, W) in 0..1, channels first; true_pha: (H, W) in 0..1.
    """
    return _fgr_error(pred_fgr, true_fgr, true_pha, cv2.NORM_L1)


def fgr_mse(pred_fgr: Image, true_fgr: Image, true_pha: Image) -> Optional[float]:
    """Foreground MSE x 1e3 over the pixels where true_pha > 0; None when there are none.

    pred_fgr, true_fgr: (3, H, W) in 0..1, channels first; true_pha: (H, W) in 0..1.
    """
    return _fgr_error(pred_fgr, true_fgr, true_pha, cv2.NORM_L2SQR)


def _mad(pred: np.ndarray, true: np.ndarray) -> float:
    return cv2.norm(pred, true, cv2.NORM_L1) / pred.size * 1e3


def _mse(pred: np.ndarray, true: np.ndarray) -> float:
    return cv2.norm(pred, true, cv2.NORM_L2SQR) / pred.size * 1e3


def _dtssd(pred_t: np.ndarray, pred_tm1: np.ndarray, true_t: np.ndarray, true_tm1: np.ndarray) -> float:
    total = sum(cv2.norm(cv2.subtract(pred_t[rows], pred_tm1[rows]), cv2.subtract(true_t[rows], true_tm1[rows]),
                         cv2.NORM_L2SQR) for rows in _strips(pred_t.shape[0]))
    return math.sqrt(total / pred_t.size) * 1e2


def _grad(pred: np.ndarray, true: np.ndarray) -> float:
    # The derivative filter sums to zero, so min-max normalising is only a scale: it goes into the filters.
    pred_filters = _scaled_filters(pred)
    true_filters = _scaled_filters(true)
    height = pred.shape[0]
    total = 0.0
    for rows in _strips(height):
        # Filter with HALF_SIZE rows of context, so only the true image border is replicated.
        top, bottom = max(rows.start - HALF_SIZE, 0), min(rows.stop + HALF_SIZE, height)
        inner = slice(rows.start - top, rows.stop - top)
        pred_magnitude = _gradient_magnitude(pred[top:bottom], pred_filters)[inner]
        true_magnitude = _gradient_magnitude(true[top:bottom], true_filters)[inner]
        total += cv2.norm(pred_magnitude, true_magnitude, cv2.NORM_L2SQR)
    return total / 1e3


def _scaled_filters(matte: np.ndarray):
    """(gaussian, derivative) with min-max normalisation folded in; a constant matte (as OpenCV) gives zeros."""
    low, high = cv2.minMaxLoc(matte)[:2]
    scale = 1 / (high - low) if high - low > np.finfo(np.float64).eps else 0.0
    return GAUSSIAN * np.float32(scale), DERIVATIVE


def _gradient_magnitude(image: np.ndarray, filters) -> np.ndarray:
    gaussian, derivative = filters
    along_x = cv2.sepFilter2D(image, cv2.CV_32F, derivative, gaussian, borderType=cv2.BORDER_REPLICATE)
    along_y = cv2.sepFilter2D(image, cv2.CV_32F, gaussian, derivative, borderType=cv2.BORDER_REPLICATE)
    # In place, and not cv2.magnitude: its result depends on the alignment of the arrays in memory.
    along_x *= along_x
    along_x += np.square(along_y, out=along_y)
    return np.sqrt(along_x, out=along_x)


def _conn(pred: np.ndarray, true: np.ndarray) -> float:
    # Pixels outside the box around min(pred, true) >= 0.1 are in no component: their level is 0.
    count = np.zeros(pred.shape, np.uint8)
    rows, cols = _box_at_least(pred, true, THRESHOLDS[1])
    if rows.stop > rows.start and cols.stop > cols.start:
        both = cv2.min(pred[rows, cols], true[rows, cols])
        # Exact on float32 in 0..1: x * 10 rounds monotonically and float32(i / 10) * 10 rounds to i.
        passed = (both * np.float32(10)).astype(np.uint8)
        _count_levels(passed, count[rows, cols])
    total = 0.0
    for strip in _strips(pred.shape[0]):
        level = cv2.LUT(count[strip], LEVEL_OF_COUNT)
        total += cv2.norm(_phi_excess(pred[strip], level), _phi_excess(true[strip], level), cv2.NORM_L1)
    return total / 1e3


def _count_levels(passed: np.ndarray, count: np.ndarray) -> None:
    """Adds to count, per pixel, for how many thresholds i = 1, 2, ... it stays in the largest 4-connected
    component of passed >= i, so that its level is THRESHOLDS[count].

    passed: uint8 (h, w), the number of thresholds 0.1, ..., 1 that min(pred, true) reaches; count: uint8 zeros.
    A component at threshold i lies inside one at i - 1, so the pixels still counting at threshold i (count == i - 1)
    are the whole largest component of i - 1. Mostly the largest component is the one around the seed, which a
    flood fill finds in time proportional to its size; when the fill does not prove it, all components are labelled.
    Threshold 1 is left out: pixels that reach it have pred = true = 1, which add nothing to Conn whatever their
    level, and the others still counting leave there, at level 0.9 either way.
    """
    labels = np.empty(passed.shape, np.int32)
    filled = np.empty((passed.shape[0] + 2, passed.shape[1] + 2), np.uint8)
    seed = _seed(passed, passed > 0)
    for i in range(1, 10):
        at_least = (passed >= i).view(np.uint8)
        # The seed is still counting, so its component lies inside the last largest one.
        if passed[seed] >= i:
            filled.fill(0)
            flags = 4 | cv2.FLOODFILL_MASK_ONLY | cv2.FLOODFILL_FIXED_RANGE
            area = cv2.floodFill(passed, filled, (int(seed[1]), int(seed[0])), 0, int(passed[seed]) - i, 255, flags)[0]
            # More pixels than all others at this threshold together: the largest component, with no tie.
            if 2 * area > cv2.countNonZero(at_least):
                count += filled[1:-1, 1:-1]
                continue
        components, labels = cv2.connectedComponents(at_least, labels, connectivity=4)
        if components == 1:
            return
        # argmax takes the first of equal sizes: OpenCV numbers components in raster order, as the reference.
        largest = 1 + int(np.argmax(_label_counts(labels, components)[1:]))
        stays = (labels == largest) & (count == i - 1)
        if not stays.any():
            return
        count += stays
        seed = _seed(passed, stays)


def _seed(passed: np.ndarray, region: np.ndarray) -> tuple:
    """(y, x) of a pixel of region with the most thresholds passed, the middle one in raster order: in a person
    that is inside the body rather than on a strand that breaks off at the next threshold."""
    most = passed[region].max()
    candidates = np.flatnonzero(region & (passed == most))
    return np.unravel_index(candidates[len(candidates) // 2], passed.shape)


def _label_counts(labels: np.ndarray, components: int) -> np.ndarray:
    """Pixels per label 0..components-1 of an int32 label image."""
    # calcHist counts a 16-bit image about twice as fast as np.bincount an int32 one; its float32 counts are exact
    # below 2**24 pixels.
    if components <= 2 ** 16 and labels.size < 2 ** 24:
        return cv2.calcHist([labels.astype(np.uint16)], [0], None, [components], [0, components]).ravel()
    return np.bincount(labels.ravel(), minlength=components)


def _phi_excess(alpha: np.ndarray, level: np.ndarray) -> np.ndarray:
    """1 - phi: alpha - level where that is >= 0.15, else 0."""
    return cv2.threshold(cv2.subtract(alpha, level), PHI_CUT, 0, cv2.THRESH_TOZERO)[1]


def _box_at_least(pred: np.ndarray, true: np.ndarray, threshold: np.float32):
    """Row and column slices of the bounding box of min(pred, true) >= threshold (empty slices if none)."""
    top, bottom, left, right = pred.shape[0], 0, pred.shape[1], 0
    for strip in _strips(pred.shape[0]):
        x, y, width, height = cv2.boundingRect((cv2.min(pred[strip], true[strip]) >= threshold).view(np.uint8))
        if width:
            top, bottom = min(top, strip.start + y), max(bottom, strip.start + y + height)
            left, right = min(left, x), max(right, x + width)
    return slice(top, max(top, bottom)), slice(left, max(left, right))


def _fgr_error(pred_fgr: Image, true_fgr: Image, true_pha: Image, norm_type: int) -> Optional[float]:
    pred_fgr, true_fgr = _arrays(pred_fgr=pred_fgr, true_fgr=true_fgr)
    (true_pha,) = _arrays(true_pha=true_pha)
    if true_pha.ndim != 2 or pred_fgr.shape != (3, *true_pha.shape) or true_fgr.shape != pred_fgr.shape:
        raise ValueError(f'foreground metrics need pred_fgr and true_fgr of shape (3, H, W), channels first, and '
                         f'true_pha (H, W); got pred_fgr {tuple(pred_fgr.shape)}, true_fgr {tuple(true_fgr.shape)}'
                         f' and true_pha {tuple(true_pha.shape)}')
    mask = (true_pha > 0).view(np.uint8)
    pixels = cv2.countNonZero(mask)
    if pixels == 0:
        return None
    total = sum(cv2.norm(pred_fgr[c], true_fgr[c], norm_type, mask) for c in range(3))
    return total / (3 * pixels) * 1e3


def _mattes(**mattes) -> list:
    """The named mattes as float32 numpy arrays (H, W), checked to be float, in 0..1 and of one shape."""
    arrays = _arrays(**mattes)
    shapes = {name: tuple(array.shape) for name, array in zip(mattes, arrays)}
    if len(set(shapes.values())) != 1 or len(arrays[0].shape) != 2 or arrays[0].size == 0:
        described = ' and '.join(f'{name} {shape}' for name, shape in shapes.items())
        raise ValueError(f'metrics need non-empty mattes (H, W) of one shape; got {described}')
    return arrays


def _arrays(**images) -> list:
    """The named images as C-contiguous float32 numpy arrays, checked to be float and in 0..1."""
    arrays = []
    for name, image in images.items():
        if isinstance(image, torch.Tensor):
            if not image.is_floating_point():
                raise TypeError(f'{name} is a {image.dtype} tensor: metrics need float images in 0..1 '
                                f'(for 8-bit images use image.float() / 255)')
            array = image.detach().to('cpu', torch.float32).numpy()
        else:
            array = np.asarray(image)
            if not np.issubdtype(array.dtype, np.floating):
                raise TypeError(f'{name} is a {array.dtype} array: metrics need float images in 0..1 '
                                f'(for 8-bit images use image.astype(np.float32) / 255)')
        array = np.ascontiguousarray(array, dtype=np.float32)
        low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
        if not (low >= 0 and high <= 1):
            raise ValueError(f'{name} has values in [{low:g}, {high:g}]: metrics need float images in 0..1 '
                             f'(8-bit values need dividing by 255)')
        arrays.append(array)
    return arrays


def _strips(height: int):
    """Slices of at most STRIP_ROWS rows covering 0..height."""
    return [slice(top, min(top + STRIP_ROWS, height)) for top in range(0, height, STRIP_ROWS)]
