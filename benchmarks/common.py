"""What every benchmark reports: the device's name, and the median of timed runs after warm-up."""
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def device_name(device: torch.device | str = 'cpu') -> str:
    """'NVIDIA H100 80GB HBM3' for a GPU; the CPU's model name and core count otherwise."""
    device = torch.device(device)
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    if os.path.exists('/proc/cpuinfo'):
        with open('/proc/cpuinfo') as cpuinfo:
            model = next((line.split(':', 1)[1].strip() for line in cpuinfo if line.startswith('model name')), model)
    return f'{model}, {os.cpu_count()} cores'


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
