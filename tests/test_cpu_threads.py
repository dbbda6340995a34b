"""cpu_threads.FreeCoreThreads: threads given up while they wait for a core, tried again later, kept when free."""
import argparse
import json
import os
import re
import sys

import pytest
import torch

import cpu_threads
from cpu_threads import FreeCoreThreads, thread_count_flag
from script_runner import REPO

sys.path.insert(0, os.path.join(REPO, 'benchmarks'))
import bench_busy_cpu  # noqa: E402


class FakeScheduler:
    """Stands in for the clock and the kernel's run delay: `waiting` is the share of the time each thread of the
    process spends runnable without a core, applied as the clock advances."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now, self.delay, self.waiting = 1000.0, 0.0, 0.0
        monkeypatch.setattr(cpu_threads.time, 'monotonic', lambda: self.now)
        monkeypatch.setattr(cpu_threads, 'run_delay_seconds', lambda: self.delay)
        self.threads_set = []
        monkeypatch.setattr(cpu_threads.torch, 'set_num_threads', self.threads_set.append)
        monkeypatch.setattr(cpu_threads.torch, 'get_num_threads', lambda: 2)

    def run(self, matcher: FreeCoreThreads, seconds: float, step: float = 1.0) -> None:
        for _ in range(round(seconds / step)):
            self.now += step
            self.delay += step * self.waiting * matcher.threads
            matcher.update()


def test_threads_follow_the_free_cores(monkeypatch):
    scheduler = FakeScheduler(monkeypatch)
    matcher = FreeCoreThreads(torch.device('cpu'))
    assert matcher.active and matcher.threads == 2
    scheduler.run(matcher, 30)
    assert matcher.threads == 2 and scheduler.threads_set == []  # an idle machine: nothing changes

    scheduler.waiting = 0.5  # another process holds a core
    scheduler.run(matcher, cpu_threads.WINDOW)
    assert matcher.threads == 1

    # At one thread, a thread more is tried after PROBE_INTERVAL; it waits, so it is given up and the next try
    # comes twice as late.
    scheduler.run(matcher, cpu_threads.PROBE_INTERVAL)
    assert matcher.threads == 2 and matcher.probing
    scheduler.run(matcher, cpu_threads.WINDOW)
    assert matcher.threads == 1 and matcher.probe_interval == 2 * cpu_threads.PROBE_INTERVAL
    scheduler.run(matcher, 1.5 * cpu_threads.PROBE_INTERVAL)
    assert matcher.threads == 1

    scheduler.waiting = 0.02  # the other process ended
    scheduler.run(matcher, 0.5 * cpu_threads.PROBE_INTERVAL + cpu_threads.WINDOW)
    assert matcher.threads == 2
    scheduler.run(matcher, 120)
    assert matcher.threads == 2 and not matcher.probing and matcher.probe_interval == cpu_threads.PROBE_INTERVAL
    assert scheduler.threads_set == [1, 2, 1, 2]


def test_threads_stay_fixed_when_asked(monkeypatch):
    scheduler = FakeScheduler(monkeypatch)
    matcher = FreeCoreThreads(torch.device('cpu'), fixed_threads=2)
    scheduler.waiting = 0.9
    scheduler.run(matcher, 60)
    assert not matcher.active and matcher.threads == 2 and scheduler.threads_set == [2]
    assert not FreeCoreThreads(torch.device('meta')).active


@pytest.mark.skipif(not os.path.exists('/proc/self/schedstat'), reason='a kernel that reports no run delay')
def test_run_delay_is_read_from_the_kernel():
    delay = cpu_threads.run_delay_seconds()
    assert isinstance(delay, float) and delay >= 0
    assert cpu_threads.run_delay_seconds() >= delay


def test_no_run_delay_leaves_the_threads_alone(monkeypatch):
    monkeypatch.setattr(cpu_threads, 'run_delay_seconds', lambda: None)
    monkeypatch.setattr(cpu_threads.torch, 'get_num_threads', lambda: 2)
    assert not FreeCoreThreads(torch.device('cpu')).active


@pytest.mark.parametrize('text, expected', [('auto', None), ('1', 1), ('16', 16)])
def test_thread_count_flag(text, expected):
    assert thread_count_flag(text) == expected


@pytest.mark.parametrize('text', ['0', '-1', 'two', '1.5', ''])
def test_thread_count_flag_refuses(text):
    with pytest.raises(argparse.ArgumentTypeError, match='thread count'):
        thread_count_flag(text)


def test_readme_busy_cpu_table_is_that_of_its_results():
    with open(os.path.join(REPO, 'README.md')) as readme:
        [(paths, table)] = re.findall(r'<!-- busy cpu table: ([^>]+) -->\n(.*?)\n<!-- end of busy cpu table -->',
                                      readme.read(), flags=re.S)
    results = []
    for path in paths.split():
        with open(os.path.join(REPO, path)) as result:
            results.append(json.load(result))
    assert table == bench_busy_cpu.readme_table(results)
