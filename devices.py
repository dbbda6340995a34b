"""Which torch device to run on, checked once with a clear error, and the device's name for reports."""
import os
import platform

import torch


class DeviceError(ValueError):
    """A --device that does not exist on this machine: the message says what to pass instead."""


def open_device(name: str) -> torch.device:
    """torch.device(name), or DeviceError when it is no device name or names a GPU this machine lacks."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"--device {name} is not a torch device: use e.g. 'cpu', 'cuda' or 'cuda:1'") from None
    if device.type == 'cuda':
        if not torch.cuda.is_available():
            raise DeviceError(f'--device {name}: no CUDA device is available here: pass --device cpu')
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f'--device {name}: this machine has {torch.cuda.device_count()} CUDA devices '
                              f'(cuda:0 to cuda:{torch.cuda.device_count() - 1})')
    return device


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
