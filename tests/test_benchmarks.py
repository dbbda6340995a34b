"""benchmarks/: the failure paths of their scripts (their speed is measured there, never asserted here)."""
import multiprocessing
import os
import sys

import pytest

from script_runner import REPO

sys.path.insert(0, os.path.join(REPO, 'benchmarks'))
import bench_inference  # noqa: E402


def test_a_dead_inference_benchmark_worker_ends_the_run_with_its_exit_code():
    context = multiprocessing.get_context('spawn')
    connection, worker_connection = context.Pipe()
    worker = context.Process(target=os._exit, args=(3,))  # dies before sending anything, as an out-of-memory kill would
    worker.start()
    worker_connection.close()
    with pytest.raises(SystemExit, match=r'a benchmark worker process failed \(exit code 3\)'):
        bench_inference.receive(worker, connection)
