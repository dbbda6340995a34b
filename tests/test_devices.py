"""devices.py: --device is checked once, with an error that says what to pass."""
import os
import platform
import subprocess
import sys

import pytest
import torch

import devices
from devices import DeviceError, autocast_dtype, device_name, open_device, reuse_freed_cpu_memory

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_cpu_opens_and_is_named():
    assert open_device('cpu') == torch.device('cpu')
    assert device_name('cpu').endswith(' cores')


def test_unknown_device_names_the_flag():
    with pytest.raises(DeviceError, match=r"--device gpu0 is not a torch device: use e\.g\. 'cpu'"):
        open_device('gpu0')


@pytest.mark.skipif(torch.cuda.is_available(), reason='this machine has CUDA')
def test_cuda_without_a_gpu_says_to_pass_cpu():
    with pytest.raises(DeviceError, match='--device cuda:1: no CUDA device is available here: pass --device cpu'):
        open_device('cuda:1')


@pytest.mark.skipif(torch.backends.mps.is_available() or hasattr(torch, 'xpu') and torch.xpu.is_available(),
                    reason='this machine has an MPS or XPU device')
@pytest.mark.parametrize('name', ['mps', 'xpu:0'])
def test_a_device_type_this_machine_lacks_says_to_pass_cpu(name):
    message = f'--device {name}: no {name[:3]} device is available here: pass --device cpu'
    with pytest.raises(DeviceError, match=message):
        open_device(name)


PAGE_FAULTS_OF_A_FORWARD = '''
import resource, sys, torch
from devices import reuse_freed_cpu_memory
from model import MattingBase
if sys.argv[1] == 'reuse':
    assert reuse_freed_cpu_memory(torch.device('cpu'))
torch.manual_seed(0)
model, src = MattingBase('mobilenetv2').eval(), torch.rand(1, 2, 3, 288, 512)
def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    with torch.no_grad():
        model(src)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults()
print(min(faults() for _ in range(3)))
'''


def transparent_huge_pages_always() -> bool:
    path = '/sys/kernel/mm/transparent_hugepage/enabled'
    if not os.path.exists(path):
        return False
    with open(path) as file:
        return '[always]' in file.read()


@pytest.mark.slow
@pytest.mark.skipif(platform.libc_ver()[0] != 'glibc' or transparent_huge_pages_always(),
                    reason='glibc malloc, and page faults counted in 4 KiB pages')
def test_freed_cpu_memory_is_reused_without_page_faults():
    # Each in a fresh process: the setting is process-wide and cannot be undone. One thread, so that the blocks
    # come from one malloc arena in the same order however busy the machine is (with two, which thread allocates
    # what, and so which arena's free memory is reused, depends on the scheduling).
    def faults(mode: str) -> int:
        run = subprocess.run([sys.executable, '-c', PAGE_FAULTS_OF_A_FORWARD, mode], cwd=REPO,
                             capture_output=True, text=True, check=True, env=dict(os.environ, OMP_NUM_THREADS='1'))
        return int(run.stdout)
    # Above glibc's largest mmap threshold (32 MiB), a block is mapped afresh at every allocation: the decoder's
    # upsampled 48 channels of 2 frames at 288x512 alone are 56.6 MB, 13,824 pages of 4 KiB.
    assert faults('default') > 13_000
    assert faults('reuse') < 1000  # after the first forward, freed blocks are handed out again


def test_allocator_is_left_alone_for_other_devices():
    assert not reuse_freed_cpu_memory(torch.device('meta'))


CPU = torch.device('cpu')


def test_precision_auto_is_bf16_only_on_a_cpu_with_bf16(monkeypatch):
    monkeypatch.setattr(devices, 'low_precision_dtype', lambda device: torch.bfloat16)
    assert autocast_dtype('auto', CPU) is torch.bfloat16 and autocast_dtype('bf16', CPU) is torch.bfloat16
    assert autocast_dtype('fp32', CPU) is None
    monkeypatch.setattr(devices, 'low_precision_dtype', lambda device: None)  # a CPU without bf16 instructions
    assert autocast_dtype('auto', CPU) is None and autocast_dtype('fp32', CPU) is None


def test_a_precision_the_cpu_lacks_names_the_flag(monkeypatch):
    monkeypatch.setattr(devices, 'low_precision_dtype', lambda device: None)
    with pytest.raises(DeviceError, match=r'^--precision bf16: .* has no bfloat16 instructions .*use --precision '
                                          r'fp32 or auto$'):
        autocast_dtype('bf16', CPU)
    with pytest.raises(DeviceError, match='^--fp16 needs a CUDA device'):
        autocast_dtype('fp16', CPU, '--fp16')
