"""Which torch device to run on, checked once with a clear error, the CPU allocator set up for large tensors,
and the device's name for reports."""
import ctypes
import os
import platform

import torch

from errors import UserError


class DeviceError(UserError):
    """A --device that does not exist on this machine: the message says what to pass instead."""


def open_device(name: str) -> torch.device:
    """torch.device(name), or DeviceError when it is no device name or names a device this machine lacks."""
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
    elif device.type != 'cpu':
        try:
            torch.empty(0, device=device)
        except Exception:  # each backend fails its own way: RuntimeError (mps), AssertionError (xpu), ImportError
            raise DeviceError(f'--device {name}: no {device.type} device is available here: pass --device cpu') \
                from None
    return device


# mallopt parameters of glibc's <malloc.h>, and how much freed memory the process keeps for reuse.
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
KEPT_FREE_BYTES = 1 << 30


def reuse_freed_cpu_memory(device: torch.device) -> bool:
    """On the CPU, make glibc serve large blocks from its heap and hand the kernel back only a heap top of more than
    1 GiB of free memory, so that freed tensors are reused by the next allocation. Returns whether it did: False for
    other devices and where the C library is not glibc.

    By default glibc maps every block above its mmap threshold (at most 32 MiB) straight from the kernel and unmaps
    it when freed, so each large tensor of a forward pass (a chunk of 8 frames at 512x288 with 48 channels is 226 MB)
    page-faults and is zero-filled afresh at every call, which can take as long as the computation itself (README,
    Performance; benchmarks/bench_inference.py measures it). The cost is resident memory: the
    process keeps about its peak heap use, as PyTorch's CUDA caching allocator keeps GPU memory.
    """
    if device.type != 'cpu':
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, KEPT_FREE_BYTES))


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


def low_precision_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype of mixed precision on `device`: float16 on CUDA; bfloat16 on a CPU whose oneDNN has
    bfloat16 instructions (avx512_bf16 or AMX); None on a CPU without them, where bfloat16 is emulated and slower."""
    if device.type == 'cuda':
        return torch.float16
    if device.type != 'cpu':
        return None
    try:
        supported = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    except (AttributeError, RuntimeError):  # a build without oneDNN
        supported = False
    return torch.bfloat16 if supported else None


def make_grad_scaler(enabled: bool):
    """A GradScaler for fp16 on CUDA (a no-op when disabled); torch.amp.GradScaler from torch 2.3 on."""
    if hasattr(torch.amp, 'GradScaler'):
        return torch.amp.GradScaler('cuda', enabled=enabled)
    return torch.cuda.amp.GradScaler(enabled=enabled)


PRECISIONS = ('auto', 'fp32', 'bf16', 'fp16')


def autocast_dtype(precision: str, device: torch.device, flag: str | None = None) -> torch.dtype | None:
    """The dtype to autocast to for `precision` (one of PRECISIONS) on `device`; None means plain float32.

    auto: low_precision_dtype(device), i.e. float16 on CUDA, bfloat16 on a CPU with bfloat16 instructions, else
    float32. bf16 and fp16 are checked: DeviceError, naming `flag` (default '--precision <precision>'), where
    the device lacks them (bfloat16 emulated on a CPU runs several times slower than float32; CPUs have no fp16
    autocast worth using)."""
    flag = flag or f'--precision {precision}'
    if precision == 'auto':
        return low_precision_dtype(device)
    if precision == 'fp32':
        return None
    if precision == 'fp16':
        if device.type != 'cuda':
            raise DeviceError(f'{flag} needs a CUDA device: use --precision auto (bf16 where the CPU has it) or fp32')
        return torch.float16
    if device.type == 'cuda' and not torch.cuda.is_bf16_supported():
        raise DeviceError(f'{flag}: {device_name(device)} has no bfloat16 support: use --precision fp16 or fp32')
    if device.type == 'cpu' and low_precision_dtype(device) is None:
        raise DeviceError(f'{flag}: {device_name(device)} has no bfloat16 instructions (oneDNN reports none), so '
                          f'bf16 would be slower than fp32: use --precision fp32 or auto')
    return torch.bfloat16
