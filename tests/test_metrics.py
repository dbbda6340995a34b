"""metrics.py: hand-worked values, slow literal implementations of Grad and Conn, torch input, bad input."""
import math
from collections import deque

import cv2
import numpy as np
import pytest
import torch

import metrics


def random_matte(rng: np.random.Generator, shape=(12, 15), blur: float = 0.0) -> np.ndarray:
    """A float32 matte in 0..1: plain noise, or with blur > 0 smooth blobs with soft edges."""
    matte = rng.random(shape).astype(np.float32)
    if blur:
        matte = cv2.GaussianBlur(matte, (0, 0), blur)
        matte = (matte - matte.min()) / (matte.max() - matte.min())
    return np.clip(matte, 0, 1).astype(np.float32)


def literal_grad(pred: np.ndarray, true: np.ndarray) -> float:
    """Grad straight from the definition in float64: loops over the 2-D filter, explicit replicate padding."""
    sigma, epsilon = 1.4, 1e-2
    half = math.ceil(sigma * math.sqrt(-2 * math.log(math.sqrt(2 * math.pi) * sigma * epsilon)))

    def gaussian(x):
        return math.exp(-x ** 2 / (2 * sigma ** 2)) / (sigma * math.sqrt(2 * math.pi))
    filter_x = np.array([[gaussian(i) * -j * gaussian(j) / sigma ** 2 for j in range(-half, half + 1)]
                         for i in range(-half, half + 1)])
    filter_x /= math.sqrt((filter_x ** 2).sum())

    def magnitude(matte):
        matte = matte.astype(np.float64)
        spread = matte.max() - matte.min()
        matte = (matte - matte.min()) / spread if spread > 0 else np.zeros_like(matte)
        padded = np.pad(matte, half, mode='edge')
        height, width = matte.shape
        along_x, along_y = np.zeros_like(matte), np.zeros_like(matte)
        for i in range(2 * half + 1):
            for j in range(2 * half + 1):
                window = padded[i:i + height, j:j + width]
                along_x += filter_x[i, j] * window
                along_y += filter_x[j, i] * window
        return np.sqrt(along_x ** 2 + along_y ** 2)
    return float(((magnitude(pred) - magnitude(true)) ** 2).sum()) / 1e3


def components_4(mask: np.ndarray) -> list:
    """4-connected components of a boolean mask as lists of pixels, in raster order of their first pixel."""
    seen = np.zeros_like(mask)
    found = []
    for y, x in zip(*np.nonzero(mask)):
        if seen[y, x]:
            continue
        seen[y, x] = True
        pixels, queue = [], deque([(y, x)])
        while queue:
            cy, cx = queue.popleft()
            pixels.append((cy, cx))
            for ny, nx in ((cy - 1, cx), (cy + 1, cx), (cy, cx - 1), (cy, cx + 1)):
                if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        found.append(pixels)
    return found


def literal_conn(pred: np.ndarray, true: np.ndarray) -> float:
    """Conn straight from the definition: per threshold the largest component (the first of equal ones), the
    round-down map set where a pixel first leaves it, phi with the 0.15 cut, in float32 like metrics.py."""
    thresholds = [np.float32(i / 10) for i in range(11)]
    level = np.full(true.shape, -1, np.float32)
    for previous, threshold in zip(thresholds, thresholds[1:]):
        omega = np.zeros(true.shape, bool)
        found = components_4((true >= threshold) & (pred >= threshold))
        if found:
            largest = max(found, key=len)  # max keeps the first of equal lengths
            omega[tuple(np.array(largest).T)] = True
        level[(level == -1) & ~omega] = previous
    level[level == -1] = 1
    pred_d, true_d = pred - level, true - level
    pred_phi = np.where(pred_d >= np.float32(0.15), 1 - pred_d, 1)
    true_phi = np.where(true_d >= np.float32(0.15), 1 - true_d, 1)
    return float(np.abs(pred_phi - true_phi).astype(np.float64).sum()) / 1e3


def test_identical_mattes_give_zero():
    matte = random_matte(np.random.default_rng(0), (20, 30), blur=2)
    values = metrics.frame_metrics(matte, matte, matte, matte)
    assert values == {'MAD': 0, 'MSE': 0, 'Grad': 0, 'Conn': 0, 'dtSSD': 0}
    fgr = np.stack([matte, 1 - matte, matte / 2])
    assert metrics.fgr_mad(fgr, fgr, matte) == 0 and metrics.fgr_mse(fgr, fgr, matte) == 0


def test_constant_offset_gives_known_mad_and_mse():
    true = random_matte(np.random.default_rng(1), (10, 10)) * np.float32(0.5)
    assert metrics.mad(true + np.float32(0.25), true) == pytest.approx(250, rel=1e-5)  # 0.25 x 1e3
    assert metrics.mse(true + np.float32(0.25), true) == pytest.approx(62.5, rel=1e-5)  # 0.0625 x 1e3
    half = true.copy()
    half[:5] += np.float32(0.5)  # half the pixels off by 0.5
    assert metrics.mad(half, true) == pytest.approx(250, rel=1e-5)
    assert metrics.mse(half, true) == pytest.approx(125, rel=1e-5)


def test_grad_of_a_vertical_step_against_a_constant():
    height, width = 6, 12
    true = np.zeros((height, width), np.float32)
    true[:, width // 2:] = 1
    pred = np.full((height, width), 0.3, np.float32)  # normalises to zeros: no gradient
    # Rows are constant, so the filter's Gaussian factor sums to sum(g) / |g| and only the x derivative is left:
    # at column c it is the sum of the normalised derivative taps that reach the step, times that factor.
    sigma = 1.4
    taps = range(-4, 5)
    g = [math.exp(-x ** 2 / (2 * sigma ** 2)) for x in taps]
    d = [-x * value for x, value in zip(taps, g)]
    norm_g, norm_d = math.sqrt(sum(v * v for v in g)), math.sqrt(sum(v * v for v in d))
    expected = 0.0
    for column in range(width):
        reach = sum(value for x, value in zip(taps, d) if min(max(column + x, 0), width - 1) >= width // 2)
        expected += height * (sum(g) / norm_g * reach / norm_d) ** 2
    assert metrics.grad(pred, true) == pytest.approx(expected / 1e3, rel=1e-5)
    assert metrics.grad(true, pred) == pytest.approx(expected / 1e3, rel=1e-5)


def test_grad_ignores_scale_and_offset_of_a_matte():
    true = random_matte(np.random.default_rng(2), (16, 16), blur=1.5)
    assert metrics.grad(true * np.float32(0.5) + np.float32(0.25), true) == pytest.approx(0, abs=1e-9)


@pytest.mark.parametrize('seed', range(6))
def test_grad_equals_the_literal_definition(seed):
    rng = np.random.default_rng(seed)
    shape = [(12, 15), (9, 9), (20, 7)][seed % 3]
    pred, true = random_matte(rng, shape, blur=seed % 2), random_matte(rng, shape, blur=1.2)
    assert metrics.grad(pred, true) == pytest.approx(literal_grad(pred, true), rel=1e-4)


def test_grad_strips_match_one_piece(monkeypatch):
    rng = np.random.default_rng(3)
    pred, true = random_matte(rng, (23, 17), blur=1), random_matte(rng, (23, 17), blur=2)
    whole = metrics.grad(pred, true)
    monkeypatch.setattr(metrics, 'STRIP_ROWS', 5)  # strips shorter than the filter's half size plus one
    assert metrics.grad(pred, true) == pytest.approx(whole, rel=1e-6)
    assert metrics.conn(pred, true) == pytest.approx(literal_conn(pred, true), rel=1e-6)


def conn_case(hole: float, small_blob: float):
    """5 x 9: a 3 x 3 block of 1 (its centre `hole` in pred) and, apart from it, a 2 x 2 block of 1 in true and
    `small_blob` in pred."""
    true = np.zeros((5, 9), np.float32)
    true[1:4, 1:4] = 1
    true[1:3, 6:8] = 1
    pred = true.copy()
    pred[2, 2] = hole
    pred[1:3, 6:8] = small_blob
    return pred, true


@pytest.mark.parametrize('hole, small_blob, expected', [
    # The centre leaves the largest component (the block's ring) after 0.5: level 0.5, true phi 0.5, pred phi 1.
    (0.5, 1.0, 0.5),
    # The centre leaves at 0.1: level 0, true phi 0, pred phi 1.
    (0.0, 1.0, 1.0),
    # The centre stays up to 0.9: level 0.9, both differences below 0.15, phi 1 in both.
    (0.95, 1.0, 0.0),
    # The small blob is never in the largest component: level 0, true phi 0, pred phi 1 - 0.8, on 4 pixels.
    (1.0, 0.8, 4 * 0.2),
    # Differences below 0.15 do not count: pred phi 1 - 0.1 is cut to 1; a difference of 0.15 does.
    (1.0, 0.1, 4 * 1.0),
    (1.0, 0.15, 4 * 0.85),
])
def test_conn_by_hand(hole, small_blob, expected):
    pred, true = conn_case(hole, small_blob)
    assert metrics.conn(pred, true) == pytest.approx(expected / 1e3, rel=1e-6, abs=1e-12)
    assert literal_conn(pred, true) == pytest.approx(expected / 1e3, rel=1e-6, abs=1e-12)


@pytest.mark.parametrize('seed', range(12))
def test_conn_equals_the_literal_definition(seed):
    rng = np.random.default_rng(seed)
    shape = [(9, 11), (16, 16), (7, 20)][seed % 3]
    if seed % 4 == 0:
        # Values on and just below the thresholds, blocky so that components tie in size.
        values = np.array([v for i in range(11) for v in (np.float32(i / 10), np.nextafter(np.float32(i / 10), 0))
                           if 0 <= v <= 1], np.float32)
        pred = np.kron(rng.choice(values, (shape[0] // 2 + 1, shape[1] // 2 + 1)), np.ones((2, 2), np.float32))
        true = np.kron(rng.choice(values, (shape[0] // 2 + 1, shape[1] // 2 + 1)), np.ones((2, 2), np.float32))
        pred, true = pred[:shape[0], :shape[1]], true[:shape[0], :shape[1]]
    else:
        pred, true = random_matte(rng, shape, blur=seed % 3), random_matte(rng, shape, blur=1.5)
    assert metrics.conn(pred, true) == pytest.approx(literal_conn(pred, true), rel=1e-6, abs=1e-12)


def test_conn_on_a_larger_soft_matte_equals_the_literal_definition():
    rng = np.random.default_rng(7)
    true = random_matte(rng, (48, 64), blur=4)
    pred = np.clip(true + rng.normal(0, 0.05, true.shape).astype(np.float32), 0, 1)
    assert metrics.conn(pred, true) == pytest.approx(literal_conn(pred, true), rel=1e-6)


def test_conn_when_the_largest_component_moves_to_another_blob():
    # A wide low blob is largest at 0.1..0.3; above that only a small high blob is left, away from it.
    true = np.zeros((6, 12), np.float32)
    true[1:5, 0:6] = 0.3
    true[2:4, 8:10] = 1
    pred = true.copy()
    pred[1:5, 0:6] = 0.35
    pred[2:4, 8:10] = 0.9
    # The high blob left at 0.1 (level 0): true phi 0, pred phi 1 - 0.9. The low blob's level is 0.3: phi 1 in
    # both. Had the high blob stayed, its level would be 0.9 and its phi 1 in both.
    assert metrics.conn(pred, true) == pytest.approx(4 * 0.1 / 1e3, rel=1e-5)
    assert literal_conn(pred, true) == pytest.approx(4 * 0.1 / 1e3, rel=1e-5)


def test_conn_of_equal_blobs_takes_the_first_in_raster_order():
    true = np.zeros((6, 10), np.float32)
    true[1:3, 1:3] = 1
    true[3:5, 6:8] = 1
    pred = true.copy()
    pred[1:3, 1:3] = 0.52  # the blobs tie in size up to 0.5
    pred[3:5, 6:8] = 0.77
    # The winner's level is its pred rounded down (pred phi 1, true phi that level), the loser's 0 (pred phi
    # 1 - pred, true phi 0): the first blob wins, 4 * (1 - 0.5) + 4 * (1 - 0.77); flipped, the second one does.
    assert metrics.conn(pred, true) == pytest.approx(4 * (0.5 + 0.23) / 1e3, rel=1e-5)
    flipped = pred[::-1, ::-1].copy(), true[::-1, ::-1].copy()
    assert metrics.conn(*flipped) == pytest.approx(4 * (0.48 + 0.3) / 1e3, rel=1e-5)
    assert literal_conn(*flipped) == pytest.approx(metrics.conn(*flipped), rel=1e-6)


def test_dtssd():
    rng = np.random.default_rng(4)
    true_tm1, true_t = random_matte(rng, (8, 10)) / 2, random_matte(rng, (8, 10)) / 2
    error = random_matte(rng, (8, 10)) / 4
    assert metrics.dtssd(true_t + error, true_tm1 + error, true_t, true_tm1) == pytest.approx(0, abs=1e-5)
    static = true_tm1
    moved = static.copy()
    moved[:4] += np.float32(0.1)  # half the pixels change by 0.1 where the truth does not change
    assert metrics.dtssd(moved, static, static, static) == pytest.approx(math.sqrt(0.01 / 2) * 1e2, rel=1e-5)


def test_frame_metrics_keys_and_first_frame():
    rng = np.random.default_rng(5)
    pred, true = random_matte(rng, (10, 12), blur=1), random_matte(rng, (10, 12), blur=1)
    first = metrics.frame_metrics(pred, true)
    assert tuple(first) == metrics.ALPHA_METRICS and first['dtSSD'] is None
    assert first['Conn'] == metrics.conn(pred, true) and first['Grad'] == metrics.grad(pred, true)
    later = metrics.frame_metrics(pred, true, true, pred)
    assert later['dtSSD'] == metrics.dtssd(pred, true, true, pred) > 0
    with pytest.raises(ValueError, match='both pred_prev and true_prev'):
        metrics.frame_metrics(pred, true, pred)


def test_foreground_metrics():
    rng = np.random.default_rng(6)
    true_pha = random_matte(rng, (6, 8))
    true_pha[:3] = 0  # half the pixels are background
    true_fgr = random_matte(rng, (3, 6, 8)) / 2
    pred_fgr = true_fgr + np.float32(0.1)
    pred_fgr[:, :3] = 1  # wrong only where true alpha is 0
    assert metrics.fgr_mad(pred_fgr, true_fgr, true_pha) == pytest.approx(100, rel=1e-5)
    assert metrics.fgr_mse(pred_fgr, true_fgr, true_pha) == pytest.approx(10, rel=1e-5)
    assert metrics.fgr_mse(pred_fgr, true_fgr, np.zeros_like(true_pha)) is None
    with pytest.raises(ValueError, match=r'channels first.*\(6, 8, 3\)'):
        metrics.fgr_mse(pred_fgr.transpose(1, 2, 0), true_fgr.transpose(1, 2, 0), true_pha)


def test_torch_input_equals_numpy_input():
    rng = np.random.default_rng(8)
    pred, true = random_matte(rng, (14, 18), blur=1), random_matte(rng, (14, 18), blur=2)
    expected = metrics.frame_metrics(pred, true, true, pred)
    as_tensors = [torch.from_numpy(pred).requires_grad_(), torch.from_numpy(true).double(),
                  torch.from_numpy(true), torch.from_numpy(pred).double()]
    assert metrics.frame_metrics(*as_tensors) == expected
    fgr = np.stack([pred, true, pred])
    assert metrics.fgr_mad(torch.from_numpy(fgr).half(), torch.from_numpy(fgr), torch.from_numpy(true)) == \
        pytest.approx(metrics.fgr_mad(fgr.astype(np.float16), fgr, true))


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r'pred \(4, 5\) and true \(5, 4\)'):
        metrics.mad(np.zeros((4, 5), np.float32), np.zeros((5, 4), np.float32))
    with pytest.raises(ValueError, match=r'pred \(1, 4, 5\) and true \(1, 4, 5\)'):
        metrics.conn(np.zeros((1, 4, 5), np.float32), np.zeros((1, 4, 5), np.float32))
    with pytest.raises(ValueError, match=r'pred_tm1 \(4, 4\)'):
        metrics.dtssd(*(np.zeros(shape, np.float32) for shape in [(4, 5), (4, 4), (4, 5), (4, 5)]))


@pytest.mark.parametrize('matte', [np.full((4, 4), 255, np.uint8), torch.full((4, 4), 255, dtype=torch.uint8),
                                   np.ones((4, 4), bool), np.ones((4, 4), np.int64)])
def test_integer_mattes_are_refused(matte):
    with pytest.raises(TypeError, match='metrics need float images in 0..1'):
        metrics.grad(matte, np.ones((4, 4), np.float32))


@pytest.mark.parametrize('value', [255.0, -0.5, float('nan')])
def test_values_outside_0_to_1_are_refused(value):
    matte = np.zeros((4, 4), np.float32)
    matte[1, 2] = value
    with pytest.raises(ValueError, match='true has values in'):
        metrics.mse(np.zeros((4, 4), np.float32), matte)
