"""Speed of metrics.py on one CPU core: milliseconds per frame for each alpha metric and for all five together.

Prints one JSON object. The frame is a synthetic person matte (soft edges, hair strands) and a prediction of it
(shifted, blurred, a false-positive blob, Gaussian noise of --noise everywhere, clipped to 0..1), the previous
frame moved as in a walking shot. Literal implementations of Grad and Conn (a full 2-D filter; one full-frame
labelling per threshold, the way the published evaluation code computes them) are timed in the same run as the
baseline of the speed-ups. Example: python benchmarks/bench_metrics.py --runs 20
"""
import os

# One core: set before numpy, OpenCV and torch start their thread pools.
for variable in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS'):
    os.environ[variable] = '1'

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from common import median_seconds  # noqa: E402  (first: it puts the repository on the import path)
import metrics  # noqa: E402
from devices import device_name  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument('--width', type=int, default=1920, help='frame width in pixels')
parser.add_argument('--height', type=int, default=1080, help='frame height in pixels')
parser.add_argument('--runs', type=int, default=20,
                    help='timed runs of each metric after --warmup runs; the median is reported')
parser.add_argument('--warmup', type=int, default=3, help='untimed runs before timing')
parser.add_argument('--reference-runs', type=int, default=3, help='timed runs of the slow literal Grad and Conn')
parser.add_argument('--noise', type=float, default=0.01, help='standard deviation of the noise added to the prediction')
parser.add_argument('--seed', type=int, default=0, help='seed of the synthetic frames')


def main() -> None:
    args = parser.parse_args()
    if min(args.width, args.height, args.runs, args.reference_runs) < 1 or args.warmup < 0 or args.noise < 0:
        parser.error('--width, --height, --runs and --reference-runs must be at least 1, --warmup and --noise not '
                     'negative')
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    pred, true, pred_prev, true_prev = synthetic_frames(args.height, args.width, args.noise, args.seed)
    timed = {
        'MAD': lambda: metrics.mad(pred, true),
        'MSE': lambda: metrics.mse(pred, true),
        'Grad': lambda: metrics.grad(pred, true),
        'Conn': lambda: metrics.conn(pred, true),
        'dtSSD': lambda: metrics.dtssd(pred, pred_prev, true, true_prev),
        'all five (frame_metrics)': lambda: metrics.frame_metrics(pred, true, pred_prev, true_prev),
    }
    ms = {name: median_seconds(function, args.warmup, args.runs) * 1e3 for name, function in timed.items()}
    literal_ms = {'Grad': median_seconds(lambda: literal_grad(pred, true), 1, args.reference_runs) * 1e3,
                  'Conn': median_seconds(lambda: literal_conn(pred, true), 1, args.reference_runs) * 1e3}
    values = metrics.frame_metrics(pred, true, pred_prev, true_prev)
    literal_values = {'Grad': literal_grad(pred, true), 'Conn': literal_conn(pred, true)}
    total = ms['all five (frame_metrics)']
    print(json.dumps({
        'benchmark': 'metrics',
        'device': device_name('cpu'),
        'versions': {'python': platform.python_version(), 'torch': torch.__version__, 'numpy': np.__version__,
                     'opencv': cv2.__version__},
        'settings': {'width': args.width, 'height': args.height, 'runs': args.runs, 'warmup': args.warmup,
                     'reference_runs': args.reference_runs, 'noise': args.noise, 'seed': args.seed,
                     'torch_threads': torch.get_num_threads(), 'opencv_threads': cv2.getNumThreads(),
                     'OMP_NUM_THREADS': os.environ['OMP_NUM_THREADS'], 'strip_rows': metrics.STRIP_ROWS},
        'ms_per_frame': {name: round(value, 2) for name, value in ms.items()},
        'frames_per_second_all_five': round(1e3 / total, 1),
        'target_ms_all_five': 50,
        'literal_ms_per_frame': {name: round(value, 2) for name, value in literal_ms.items()},
        'speedup_over_literal': {name: round(literal_ms[name] / ms[name], 1) for name in literal_ms},
        'values': {name: None if value is None else round(value, 6) for name, value in values.items()},
        'literal_values': {name: round(value, 6) for name, value in literal_values.items()},
    }, indent=2))


def synthetic_frames(height: int, width: int, noise: float, seed: int):
    """(pred, true, pred_prev, true_prev): float32 mattes (height, width) in 0..1 of a person walking right."""
    rng = np.random.default_rng(seed)
    strands = [(rng.uniform(-0.09, 0.09), rng.uniform(-0.2, -0.05), rng.uniform(0.3, 0.9)) for _ in range(60)]
    true, true_prev = (person(height, width, shift, strands) for shift in (0.0, -0.004))
    pred, pred_prev = (prediction(matte, noise, rng) for matte in (true, true_prev))
    return pred, true, pred_prev, true_prev


def person(height: int, width: int, shift: float, strands) -> np.ndarray:
    """A head, neck, torso and arms with soft edges and hair strands, centred at shift * width from the middle."""
    matte = np.zeros((height, width), np.float32)
    scale = height / 1080
    centre = width * (0.5 + shift)

    def point(x, y):
        return int(round(centre + x * height)), int(round(y * height))
    cv2.circle(matte, point(0, 0.25), int(115 * scale), 1.0, -1)
    cv2.line(matte, point(0, 0.3), point(0, 0.4), 1.0, int(90 * scale))
    cv2.ellipse(matte, point(0, 0.75), (int(260 * scale), int(420 * scale)), 0, 0, 360, 1.0, -1)
    cv2.line(matte, point(-0.22, 0.5), point(-0.42, 0.95), 1.0, int(70 * scale))
    cv2.line(matte, point(0.22, 0.5), point(0.40, 0.9), 1.0, int(70 * scale))
    matte = cv2.GaussianBlur(matte, (0, 0), 2.5 * scale)
    hair = np.zeros_like(matte)
    for dx, dy, alpha in strands:
        cv2.line(hair, point(0, 0.2), point(dx, 0.25 + dy), alpha, max(1, int(2 * scale)))
    return np.clip(np.maximum(matte, cv2.GaussianBlur(hair, (0, 0), 0.8 * scale)), 0, 1)


def prediction(matte: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """The matte as a model might predict it: moved 3 px, blurred, a false-positive blob, noise, clipped."""
    height, width = matte.shape
    pred = cv2.warpAffine(matte, np.float32([[1, 0, 3], [0, 1, -2]]), (width, height), borderMode=cv2.BORDER_REPLICATE)
    pred = cv2.GaussianBlur(pred, (0, 0), 1.5)
    cv2.ellipse(pred, (width // 5, height // 3), (width // 40, height // 30), 0, 0, 360, 0.6, -1)
    pred += rng.normal(0, noise, pred.shape).astype(np.float32)
    return np.clip(pred, 0, 1)


def literal_grad(pred: np.ndarray, true: np.ndarray) -> float:
    """Grad as literally defined: min-max normalise, full 2-D derivative filters, squared difference summed."""
    filter_x = np.outer(metrics.GAUSSIAN, metrics.DERIVATIVE)

    def magnitude(matte):
        normalised = cv2.normalize(matte, None, 1.0, 0.0, cv2.NORM_MINMAX)
        along_x = cv2.filter2D(normalised, -1, filter_x, borderType=cv2.BORDER_REPLICATE)
        along_y = cv2.filter2D(normalised, -1, filter_x.T, borderType=cv2.BORDER_REPLICATE)
        return np.sqrt(along_x ** 2 + along_y ** 2)
    return float(((magnitude(pred) - magnitude(true)) ** 2).sum(dtype=np.float64)) / 1e3


def literal_conn(pred: np.ndarray, true: np.ndarray) -> float:
    """Conn as literally defined: one full-frame labelling per threshold, the round-down map updated each time."""
    level = np.full(true.shape, -1, np.float32)
    thresholds = metrics.THRESHOLDS
    for previous, threshold in zip(thresholds, thresholds[1:]):
        both = ((true >= threshold) & (pred >= threshold)).astype(np.uint8)
        _, labels, stats, _ = cv2.connectedComponentsWithStats(both, connectivity=4)
        omega = np.zeros(true.shape, bool)
        if len(stats) > 1:
            omega = labels == 1 + np.argmax(stats[1:, cv2.CC_STAT_AREA])
        level[(level == -1) & ~omega] = previous
    level[level == -1] = 1
    pred_d, true_d = pred - level, true - level
    pred_phi = 1 - pred_d * (pred_d >= np.float32(0.15))
    true_phi = 1 - true_d * (true_d >= np.float32(0.15))
    return float(np.abs(pred_phi - true_phi).sum(dtype=np.float64)) / 1e3


if __name__ == '__main__':
    main()
