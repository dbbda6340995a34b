"""What every benchmark shares: the repository on the import path, and the median of timed runs after warm-up."""
import os
import statistics
import sys
import time
from collections.abc import Callable

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def median_seconds(run: Callable[[], object], warmup: int = 1, runs: int = 3,
                   device: torch.device | str = 'cpu') -> float:
    """Median wall-clock seconds of `runs` calls of `run` after `warmup` untimed calls (CUDA synchronised)."""
    device = torch.device(device)
    times = []
    for index in range(warmup + runs):
        start = time.perf_counter()
        run()
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        if index >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)
