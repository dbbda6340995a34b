"""torch's CPU thread count kept to the cores this process actually gets, so that a busy machine does not stall it.

torch runs its CPU operators on OpenMP threads that meet at a barrier after each one. A thread that arrives first
spins there (libgomp's default) while the thread it waits for is descheduled by another process, so with more
threads than free cores a step can take many times longer than with fewer threads (README, Performance:
benchmarks/bench_busy_cpu.py measured README's first command's steps 5 to 8 times slower with 2 threads than
following the free cores on this 2-core CPU while other jobs ran). libgomp's passive wait policy
(OMP_WAIT_POLICY=PASSIVE) avoids the spinning, but each wake-up then costs a system call: in a quick test of the
same training step on a lightly loaded machine it was slower than the default (0.93 to 1.15 s against 0.69 to
0.77 s).

FreeCoreThreads watches how long this process's threads sit runnable without a core (the kernel's run delay in
/proc/self/task/*/schedstat, which counts only this process, so it is right inside a container too) and takes one
thread away while they wait; later it tries one thread more, and keeps it if it does not wait.
"""
import argparse
import os
import time

import torch

# Above this share of the time spent runnable without a core, a thread is given up.
CONTENDED = 0.25
# Seconds over which the run delay is measured; a window ends at the first update() after it.
WINDOW = 5.0
# Seconds at fewer threads before one more is tried; doubled after each try that waited, up to MAX_PROBE_INTERVAL.
PROBE_INTERVAL, MAX_PROBE_INTERVAL = 60.0, 960.0


def run_delay_seconds() -> float | None:
    """Seconds this process's threads have spent runnable but not running, summed over its threads (the second
    field of /proc/self/task/<tid>/schedstat); None where the kernel does not report it."""
    delays = []
    try:
        tasks = os.listdir('/proc/self/task')
    except OSError:
        return None
    for task in tasks:
        try:
            with open(f'/proc/self/task/{task}/schedstat') as schedstat:
                delays.append(int(schedstat.read().split()[1]))
        except (OSError, IndexError, ValueError):  # a thread that just ended, or no schedstat in this kernel
            continue
    return sum(delays) / 1e9 if delays else None


class FreeCoreThreads:
    """torch.set_num_threads between 1 and the count torch started with (OMP_NUM_THREADS, else the cores), following
    the cores free: call update() once per step (cheap: it reads /proc at most every WINDOW seconds). `threads` is
    the count in use. Inactive (update() does nothing) off the CPU, with a fixed count, with one thread, and where
    the kernel reports no run delay."""

    def __init__(self, device: torch.device, fixed_threads: int | None = None) -> None:
        if fixed_threads is not None:
            torch.set_num_threads(fixed_threads)
        self.max_threads = torch.get_num_threads()
        self.threads = self.max_threads
        self.active = (device.type == 'cpu' and fixed_threads is None and self.max_threads > 1
                       and run_delay_seconds() is not None)
        self.probing = False  # whether the last thread added is on trial
        self.probe_interval = PROBE_INTERVAL
        self.next_probe = 0.0
        self.window_start, self.delay_at_start = time.monotonic(), run_delay_seconds()

    def update(self) -> None:
        if not self.active:
            return
        now = time.monotonic()
        if now - self.window_start < WINDOW:
            return
        waiting = (run_delay_seconds() - self.delay_at_start) / (now - self.window_start) / self.threads
        if waiting > CONTENDED and self.threads > 1:
            if self.probing:
                self.probe_interval = min(2 * self.probe_interval, MAX_PROBE_INTERVAL)
            self.probing = False
            self.set_threads(self.threads - 1)
            self.next_probe = now + self.probe_interval
        elif self.probing:  # the thread added did not wait: keep it
            self.probing = False
            self.probe_interval = PROBE_INTERVAL
            self.next_probe = now + PROBE_INTERVAL
        elif self.threads < self.max_threads and now >= self.next_probe:
            self.probing = True
            self.set_threads(self.threads + 1)
        self.window_start, self.delay_at_start = time.monotonic(), run_delay_seconds()

    def set_threads(self, threads: int) -> None:
        self.threads = threads
        torch.set_num_threads(threads)


def thread_count_flag(text: str) -> int | None:
    """argparse type of --cpu-threads: 'auto' (None: FreeCoreThreads follows the free cores) or a count >= 1."""
    if text == 'auto':
        return None
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is neither 'auto' nor a thread count of 1 or more")
    return int(text)


CPU_THREADS_HELP = ("torch's CPU threads: 'auto' (the default) starts from OMP_NUM_THREADS or the cores and gives "
                    "threads up while other processes hold the cores, which would otherwise stall every step "
                    "(README, Performance); a number fixes the count")
