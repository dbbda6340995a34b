"""devices.py: --device is checked once, with an error that says what to pass."""
import pytest
import torch

from devices import DeviceError, device_name, open_device


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
