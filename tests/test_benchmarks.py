"""benchmarks/: every script runs at a tiny size and prints its JSON (so that none can rot), and the failure paths
(their speed is measured there, never asserted here)."""
import glob
import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from script_runner import REPO, run_script

sys.path.insert(0, os.path.join(REPO, 'benchmarks'))
import bench_inference  # noqa: E402
import gpu  # noqa: E402

# Each benchmark script with flags that make it take seconds on a CPU.
TINY_RUNS = {
    'bench_busy_cpu.py': ['--steps', '3', '--repeats', '1', '--resolution', '32', '--seq-length', '2'],
    'bench_inference.py': ['--backbones', 'mobilenetv2', '--width', '64', '--height', '64', '--chunk', '2',
                           '--chunks', '1', '--runs', '1', '--device', 'cpu'],
    'bench_loader.py': ['--width', '96', '--height', '54', '--clips', '2', '--frames', '8', '--resolution', '32',
                        '--seq-length', '3', '--batch-size', '2', '--workers', '0', '2', '--runs', '1',
                        '--device', 'cpu'],
    'bench_memory.py': ['--lengths', '2', '4', '--width', '64', '--height', '48', '--seq-length', '2',
                        '--device', 'cpu'],
    'bench_metrics.py': ['--width', '64', '--height', '48', '--runs', '1', '--warmup', '0', '--reference-runs', '1'],
    'bench_train.py': ['--backbones', 'mobilenetv2', '--resolution', '32', '--batch-size', '2', '--seq-length', '2',
                       '--variants', 'fp32', '--runs', '1', '--device', 'cpu'],
}


def test_every_benchmark_script_has_a_tiny_run():
    scripts = {os.path.basename(path) for path in glob.glob(os.path.join(REPO, 'benchmarks', '*.py'))}
    assert scripts - {'common.py', 'gpu.py'} == set(TINY_RUNS)  # gpu.py: test_gpu_run_writes_every_result


@pytest.mark.slow
@pytest.mark.parametrize('script', sorted(TINY_RUNS))
def test_benchmark_runs_at_a_tiny_size(script):
    result = run_script(os.path.join('benchmarks', script), *TINY_RUNS[script])
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert output['benchmark'] and output['device']


def living_processes() -> dict[int, int]:
    """{pid: parent pid} of the processes alive (zombies left out), from /proc."""
    parents = {}
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                with open(f'/proc/{entry}/stat') as stat:
                    fields = stat.read().rsplit(')', 1)[1].split()
            except OSError:  # it just ended
                continue
            if fields[0] != 'Z':
                parents[int(entry)] = int(fields[1])
    return parents


def descendants(pid: int) -> set[int]:
    """The living processes below `pid`: its children, their children..."""
    parents = living_processes()
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir('/proc'), reason='processes listed from /proc')
@pytest.mark.parametrize('script, arguments', [
    ('bench_busy_cpu.py', TINY_RUNS['bench_busy_cpu.py']), ('bench_memory.py', TINY_RUNS['bench_memory.py']),
    ('gpu.py', ['--tiny', '--device', 'cpu', '--parts', 'train-loop'])])
def test_a_stopped_benchmark_stops_its_children(tmp_path, script, arguments):
    if script == 'gpu.py':
        arguments = [*arguments, '--results-dir', str(tmp_path)]
    benchmark = subprocess.Popen([sys.executable, os.path.join(REPO, 'benchmarks', script), *arguments], cwd=REPO,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not descendants(benchmark.pid) and time.monotonic() < deadline and benchmark.poll() is None:
        time.sleep(0.1)
    children = descendants(benchmark.pid)
    assert children, 'the benchmark started no process'
    time.sleep(1)
    benchmark.send_signal(signal.SIGTERM)
    _, stderr = benchmark.communicate(timeout=60)
    assert benchmark.returncode == 143 and stderr.strip().splitlines()[-1].startswith('interrupted: ')
    deadline = time.monotonic() + 10
    while children & set(living_processes()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not children & set(living_processes()), 'a child of the benchmark outlived it'


@pytest.mark.slow
def test_loader_benchmark_reports_the_steady_state_of_each_loader():
    result = run_script('benchmarks/bench_loader.py', *TINY_RUNS['bench_loader.py'])
    assert result.returncode == 0, result.stderr
    results = json.loads(result.stdout)['results']
    with_workers = results['workers_2']
    for name in ('today', 'cpu path', 'device path'):
        figures = with_workers[name]
        assert figures['clips_per_second'] > 0 and figures['worker_cpu_ms_per_clip'] > 0
        assert figures['threads_per_worker'] >= 1 and figures['main_cpu_ms_per_clip'] >= 0
    # uint8 frames (and a 5 KB generator state) against float32: about a quarter of the bytes at any size.
    assert with_workers['device path']['bytes_per_clip'] < 0.35 * with_workers['today']['bytes_per_clip']
    assert results['workers_0']['today']['worker_cpu_ms_per_clip'] == 0


@pytest.mark.slow
def test_gpu_run_writes_every_result(tmp_path):
    result = run_script('benchmarks/gpu.py', '--tiny', '--device', 'cpu', '--results-dir', str(tmp_path),
                        '--train-seconds', '3', '--warmup-steps', '1', timeout=600)
    assert result.returncode == 0, result.stderr
    prefix = gpu.device_slug(torch.device('cpu'))
    assert set(os.listdir(tmp_path)) == {f'{prefix}-{part}.json' for part in
                                         ('inference', 'loader', 'train', 'train-loop')}
    train_loop = json.loads((tmp_path / f'{prefix}-train-loop.json').read_text())['results']
    assert train_loop['steps_timed'] >= 1 and 0 <= train_loop['data_wait_share_mean'] <= 1


def test_device_slug_names_results_as_the_folder_does(monkeypatch):
    monkeypatch.setattr(gpu, 'device_name', lambda device: 'AMD EPYC, 2 cores')
    assert gpu.device_slug(torch.device('cpu')) == 'cpu-amd-epyc-2core'
    assert os.path.exists(os.path.join(REPO, 'benchmarks', 'results', 'cpu-amd-epyc-2core-memory.json'))
    monkeypatch.setattr(gpu, 'device_name', lambda device: 'NVIDIA H100 80GB HBM3')
    assert gpu.device_slug(torch.device('cuda')) == 'nvidia-h100-80gb-hbm3'


def test_a_dead_inference_benchmark_worker_ends_the_run_with_its_exit_code():
    context = multiprocessing.get_context('spawn')
    connection, worker_connection = context.Pipe()
    worker = context.Process(target=os._exit, args=(3,))  # dies before sending anything, as an out-of-memory kill would
    worker.start()
    worker_connection.close()
    with pytest.raises(SystemExit, match=r'a benchmark worker process failed \(exit code 3\)'):
        bench_inference.receive(worker, connection)


def readme() -> str:
    with open(os.path.join(REPO, 'README.md')) as file:
        return file.read()


def test_readme_loader_table_is_the_recorded_json():
    import bench_loader
    with open(os.path.join(REPO, 'benchmarks', 'results', 'cpu-amd-epyc-2core-loader-paths.json')) as file:
        output = json.load(file)
    assert '\n'.join(bench_loader.readme_table(output, 2)) in readme()
    assert f"`{output['command']}`" in readme().replace('\n', ' ')


def test_readme_gpu_run_command_uses_real_flags():
    commands = [line for line in readme().splitlines() if 'python benchmarks/gpu.py' in line]
    assert commands
    flags = {flag for line in commands for flag in re.findall(r'(--[a-z-]+)', line.split('gpu.py', 1)[1])}
    assert flags and flags <= set(gpu.parser._option_string_actions)
