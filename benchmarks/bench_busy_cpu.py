"""README's first command's training on a busy CPU: seconds per step alone and beside CPU-bound processes, with
torch's threads fixed at the cores (what train.py did before --cpu-threads auto) and following the free cores
(--cpu-threads auto, the default).

Each run is train.py with the flags of README's first command, for --steps steps, into a temporary folder; its
seconds per step come from the wall times TensorBoard records for the loss of each step, from the second logged
step on (start-up excluded). The runs alternate (fixed, auto, fixed, auto...) within each condition so that changes
of the machine's own load fall on both modes; the 1-minute load average before and after is reported.
OMP_NUM_THREADS is removed from train.py's environment, so that 'auto' may use every core, as it does by default.
The busy condition starts --hogs processes that spin in a Python loop (each holds one core) and stops them after
the run. Ctrl-C or SIGTERM stops the training run and the busy processes too, and exits with 130 or 143.

Prints one JSON object. Example: python benchmarks/bench_busy_cpu.py --steps 30 --repeats 1
--readme RESULT.json... prints README's table of results instead.
"""
import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from common import REPO
from devices import device_name
from errors import run_main

MODES = ('fixed', 'auto')

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument('--steps', type=int, default=40, help='training steps per run (at least 3)')
parser.add_argument('--hogs', type=int, default=1, help='CPU-bound processes beside the busy runs')
parser.add_argument('--repeats', type=int, default=2, help='runs per mode and condition; the median is reported')
parser.add_argument('--resolution', type=int, default=None, help="override README's --resolution (tiny test runs)")
parser.add_argument('--seq-length', type=int, default=None, help="override README's --seq-length (tiny test runs)")
parser.add_argument('--readme', metavar='RESULT', nargs='+', help="print README's table of these result files and exit")


def main() -> None:
    args = parser.parse_args()
    run_main(lambda: benchmark(args), 'the training runs and busy processes are stopped; nothing printed')


def benchmark(args: argparse.Namespace) -> None:
    if args.readme:
        results = []
        for path in args.readme:
            with open(path) as result:
                results.append(json.load(result))
        print(readme_table(results))
        return
    if args.steps < 3 or args.hogs < 1 or args.repeats < 1:
        sys.exit('error: --steps must be at least 3, --hogs and --repeats at least 1')
    command = readme_training_command()
    for flag, value in (('--resolution', args.resolution), ('--seq-length', args.seq_length)):
        if value is not None:
            command += [flag, str(value)]
    load_before = os.getloadavg()
    seconds = {condition: {mode: [] for mode in MODES} for condition in ('idle', 'busy')}
    for condition, hogs in (('idle', 0), ('busy', args.hogs)):
        for _ in range(args.repeats):
            for mode in MODES:
                seconds[condition][mode].append(seconds_per_step(command, mode, args.steps, hogs))
    medians = {condition: {mode: statistics.median(times) for mode, times in by_mode.items()}
               for condition, by_mode in seconds.items()}
    print(json.dumps({
        'benchmark': 'busy_cpu', 'device': device_name('cpu'), 'command': shlex.join(command), 'steps': args.steps,
        'hogs': args.hogs,
        'threads_fixed_at': len(os.sched_getaffinity(0)),
        'load_average_1min_before_after': [load_before[0], os.getloadavg()[0]],
        'seconds_per_step': seconds, 'median_seconds_per_step': medians,
        'busy_over_idle': {mode: medians['busy'][mode] / medians['idle'][mode] for mode in MODES},
        'auto_over_fixed': {condition: medians[condition]['auto'] / medians[condition]['fixed']
                            for condition in medians}}, indent=1))


def readme_table(results: list[dict]) -> str:
    """README's table of some results: per run, the median seconds per step of each mode, with no busy process added
    and beside the busy processes."""
    lines = ['| run (1-minute load average before, after) | busy processes added | threads fixed at the cores (before) '
             '| --cpu-threads auto | auto / fixed |', '| --- | --- | --- | --- | --- |']
    for result in results:
        before, after = result['load_average_1min_before_after']
        for condition, hogs in (('idle', 0), ('busy', result['hogs'])):
            fixed, auto = (result['median_seconds_per_step'][condition][mode] for mode in MODES)
            lines.append(f'| {before:.1f}, {after:.1f} | {hogs} | {fixed:.2f} | {auto:.2f} | {auto / fixed:.2f}x |')
    return '\n'.join(lines)


def readme_training_command() -> list[str]:
    """The `python train.py ...` part of README's first command, as an argument list."""
    with open(os.path.join(REPO, 'README.md')) as readme:
        first_line = readme.read().split('```shell\n', 1)[1].splitlines()[0]
    for part in first_line.split('&&'):
        words = shlex.split(part)
        if words[:2] == ['python', 'train.py']:
            return [sys.executable, *words[1:]]
    sys.exit("error: README's first command runs no 'python train.py': update benchmarks/bench_busy_cpu.py")


def seconds_per_step(command: list[str], mode: str, steps: int, hogs: int) -> float:
    """Median seconds between consecutive steps of one run of `command` for `steps` steps, beside `hogs` busy
    processes, with --cpu-threads fixed at the cores (mode 'fixed') or 'auto'."""
    threads = str(len(os.sched_getaffinity(0))) if mode == 'fixed' else 'auto'
    busy = [subprocess.Popen([sys.executable, '-c', 'while True: pass']) for _ in range(hogs)]
    try:
        with tempfile.TemporaryDirectory() as folder:
            run = subprocess.run([*command, '--max-steps', str(steps), '--model-name', 'bench-busy-cpu',
                                  '--checkpoint-dir', os.path.join(folder, 'checkpoint'),
                                  '--log-dir', os.path.join(folder, 'log'), '--log-train-loss-interval', '1',
                                  '--cpu-threads', threads], cwd=REPO, capture_output=True, text=True,
                                 env={name: value for name, value in os.environ.items() if name != 'OMP_NUM_THREADS'})
            if run.returncode != 0:
                sys.exit(f'error: train.py failed (exit {run.returncode}): {run.stderr.strip()[-2000:]}')
            events = EventAccumulator(os.path.join(folder, 'log'))
            events.Reload()
            times = [event.wall_time for event in events.Scalars('train/loss_total')][1:]
    finally:
        for process in busy:
            process.kill()
            process.wait()
    return statistics.median(later - earlier for earlier, later in zip(times, times[1:]))


if __name__ == '__main__':
    main()
