r"""The ConvLSTM ablation: "w/ ConvLSTM" against "w/o ConvLSTM" on the built-in synthetic data, in one command.

    python scripts/ablation.py                 # the default budget: under 40 minutes on a 2-core CPU

For each seed it trains the model with and without --without-convlstm under the same budget, seed and data: first
on the plain style, then on the camouflage style starting from that model's plain checkpoint (a curriculum:
figures first, then figures that only motion reveals; --camouflage-from-scratch turns it off). It validates each
on the style's valid split: "w/ ConvLSTM" with the state carried through every clip, the same checkpoint with the
state reset every --seq-length frames, and "w/o ConvLSTM". The runs go through train.py and validate.py, the w/
and w/o models of each seed side by side (--jobs at once; on the CPU each gets its share of the cores), and write
    checkpoint/<name>/<run>/, log/<name>/<run>/ (TensorBoard), output/<name>/<run>/metrics.json (validate.py)
    output/<name>/<run>-reset/metrics.json            the w/ ConvLSTM run validated with the state reset
    output/<name>/<run>/train.log, validate*.log      the scripts' own output
    output/<name>/<run>/training.json                 how the run was trained and for how many minutes
    report/<name>.csv, report/<name>.md               the table: MAD, MSE, Grad, Conn, dtSSD, mean and spread
    report/<name>.json                                the settings, every run's paths and numbers, and the table
where <run> is <style>-<with|without>-convlstm-seed<seed>, and, when report/README.md has the lines
<!-- <name> table --> and <!-- end of <name> table -->, the table between them, so that the report shows the
numbers the script measured. A rerun skips training that has finished and resumes training that was
interrupted, so an interrupted ablation is continued by running the same command again.

A larger budget on a GPU, for example:
    python scripts/ablation.py --name ablation-gpu --model-backbone resnet50 --resolution 224 --steps 4000 \
        --seeds 0 1 2 --jobs 1 --num-workers 8
"""
import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from atomic_file import atomic_write  # noqa: E402
from data_path import DATA_PATH  # noqa: E402
from devices import DeviceError, device_name, open_device  # noqa: E402
from model import BACKBONES  # noqa: E402
from train import CHECKPOINT_NAME, newest_checkpoint  # noqa: E402

STYLES = {'plain': 'synthetic', 'camouflage': 'synthetic-camouflage'}  # style -> dataset name of data_path.py
METRICS = ('MAD', 'MSE', 'Grad', 'Conn', 'dtSSD')
WITH, RESET, WITHOUT = 'w/ ConvLSTM', 'w/ ConvLSTM, state reset every sequence', 'w/o ConvLSTM'
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument('--name', default='ablation', help='names the checkpoint, log, output and report files')
parser.add_argument('--styles', nargs='+', default=list(STYLES), choices=list(STYLES), help='synthetic styles')
parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1], help='training seeds; the spread is over these')
parser.add_argument('--model-backbone', default='mobilenetv2', choices=BACKBONES, help='encoder')
parser.add_argument('--resolution', type=int, default=64, help='training and validation frame size (square)')
parser.add_argument('--batch-size', type=int, default=2, help='sequences per training step')
parser.add_argument('--seq-length', type=int, default=8, help='frames per training sequence and validation chunk')
parser.add_argument('--steps', type=int, default=500, help='training steps of every run (the budget)')
parser.add_argument('--lr', type=float, default=5e-4,
                    help='learning rate of the encoder, ASPP and decoder alike (they start from random weights)')
parser.add_argument('--camouflage-from-scratch', action='store_true',
                    help='train camouflage from random weights instead of from the same model\'s plain checkpoint')
parser.add_argument('--jobs', type=int, default=2, help='training runs at once')
parser.add_argument('--num-workers', type=int, default=0, help='DataLoader workers of each training run')
parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu', help='torch device')
parser.add_argument('--checkpoint-root', default='checkpoint', help='checkpoints go to <this>/<name>/<run>')
parser.add_argument('--log-root', default='log', help='TensorBoard logs go to <this>/<name>/<run>')
parser.add_argument('--output-root', default='output', help='validation outputs go to <this>/<name>/<run>')
parser.add_argument('--report-dir', default='report', help='folder of <name>.csv, <name>.md and <name>.json')


def main() -> None:
    args = parser.parse_args()
    if min(args.steps, args.jobs, args.batch_size, args.seq_length) < 1 or args.resolution < 32:
        sys.exit('error: --steps, --jobs, --batch-size and --seq-length must be at least 1, --resolution at least 32')
    try:
        open_device(args.device)
    except DeviceError as error:
        sys.exit(f'error: {error}')
    if os.path.exists(args.report_dir) and not os.path.isdir(args.report_dir):
        sys.exit(f'error: --report-dir {args.report_dir} is a file: choose a folder')
    styles = [style for style in STYLES if style in args.styles]  # plain first: camouflage may start from it
    lanes = [(seed, recurrent) for seed in args.seeds for recurrent in (True, False)]
    started = time.time()
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(train_lane, args, styles, *lane) for lane in lanes]
        try:
            runs = [run for future in futures for run in future.result()]
        except BaseException:
            pool.shutdown(cancel_futures=True)  # lanes not yet started; the running ones finish their script
            raise
    table = summarise(runs, styles)
    write_report(args, runs, table, minutes=(time.time() - started) / 60)
    print(markdown_table(table))
    print(f'wrote {os.path.join(args.report_dir, args.name)}.csv, .md and .json')


def train_lane(args: argparse.Namespace, styles: list[str], seed: int, recurrent: bool) -> list[dict]:
    """One model (w/ or w/o ConvLSTM) and seed through the styles in order; camouflage starts from the plain
    checkpoint (a curriculum: figures first, then figures that only motion reveals) unless --camouflage-from-scratch
    or plain is not among the styles."""
    results, initialisation = [], None
    for style in styles:
        evaluations, checkpoint = train_and_validate(args, style, seed, recurrent, initialisation)
        results += evaluations
        if style == 'plain' and not args.camouflage_from_scratch:
            initialisation = checkpoint
    return results


def run_name(style: str, seed: int, recurrent: bool) -> str:
    return f"{style}-{'with' if recurrent else 'without'}-convlstm-seed{seed}"


def train_and_validate(args: argparse.Namespace, style: str, seed: int, recurrent: bool,
                       initialisation: str | None) -> tuple[list[dict], str]:
    """Train one run (or finish it), from the checkpoint `initialisation` if given, and validate it: one result per
    evaluation, with paths and the mean metrics; and the path of the trained checkpoint."""
    name = run_name(style, seed, recurrent)
    checkpoint_dir = os.path.join(args.checkpoint_root, args.name, name)
    log_dir = os.path.join(args.log_root, args.name, name)
    output_dir = os.path.join(args.output_root, args.name, name)
    os.makedirs(output_dir, exist_ok=True)
    threads = str(max(1, (os.cpu_count() or 1) // args.jobs)) if args.device == 'cpu' else None
    ablation = [] if recurrent else ['--without-convlstm']
    start = ['--model-pretrain-initialization', initialisation] if initialisation else []

    # What the run is trained with, and for how long, is kept beside its outputs: a rerun reuses finished training
    # only if it was made the same way, and still reports its time.
    record_path = os.path.join(output_dir, 'training.json')
    settings = {'model_backbone': args.model_backbone, 'resolution': args.resolution, 'batch_size': args.batch_size,
                'seq_length': args.seq_length, 'steps': args.steps, 'lr': args.lr, 'seed': seed,
                'without_convlstm': not recurrent, 'initialised_from': initialisation and repo_path(initialisation)}
    record = read_record(record_path)
    if record is not None and record['settings'] != settings:
        raise SystemExit(f'error: {checkpoint_dir} holds a run trained with other settings ({record["settings"]}): '
                         f'choose another --name, or delete it and {output_dir}')
    checkpoint = newest_checkpoint(checkpoint_dir)
    if checkpoint is None or int(CHECKPOINT_NAME.search(checkpoint)[2]) < args.steps:
        started = time.time()
        run_script(os.path.join(output_dir, 'train.log'), threads, [
            'train.py', '--dataset-name', STYLES[style], '--model-backbone', args.model_backbone,
            '--model-name', name, '--resolution', str(args.resolution), '--batch-size', str(args.batch_size),
            '--seq-length', str(args.seq_length), '--max-steps', str(args.steps), '--epoch-end', str(10 ** 9),
            '--lr-backbone', str(args.lr), '--lr-aspp', str(args.lr), '--lr-decoder', str(args.lr),
            '--seed', str(seed), '--device', args.device, '--num-workers', str(args.num_workers),
            '--checkpoint-dir', checkpoint_dir, '--log-dir', log_dir, '--resume',
            '--log-train-loss-interval', str(max(1, args.steps // 100)), '--log-valid-interval', '0',
            '--log-train-images-interval', str(args.steps), '--checkpoint-interval', str(max(1, args.steps // 4)),
            '--keep-checkpoints', '1', *ablation, *start])
        checkpoint = newest_checkpoint(checkpoint_dir)
        record = {'settings': settings, 'minutes': (record or {'minutes': 0})['minutes'] + (time.time() - started) / 60}
        with atomic_write(record_path, 'w') as file:
            json.dump(record, file)
    elif record is None:
        raise SystemExit(f'error: {checkpoint} is finished but {record_path} is missing, so how it was trained is '
                         f'unknown: choose another --name, or delete {checkpoint_dir} and {output_dir}')

    evaluations = [(WITH, 0, ''), (RESET, args.seq_length, '-reset')] if recurrent else [(WITHOUT, 0, '')]
    results = []
    for model, reset_every, suffix in evaluations:
        metrics_dir = output_dir + suffix
        run_script(os.path.join(output_dir, f'validate{suffix}.log'), threads, [
            'validate.py', '--dataset-name', STYLES[style], '--model-backbone', args.model_backbone,
            '--model-checkpoint', checkpoint, '--output-path', metrics_dir, '--seq-length', str(args.seq_length),
            '--reset-state-every', str(reset_every), '--resolution', str(args.resolution), '--device', args.device,
            *ablation])
        with open(os.path.join(metrics_dir, 'metrics.json')) as file:
            mean = json.load(file)['mean']
        results.append({'style': style, 'dataset': STYLES[style], 'dataset_root': repo_path(DATA_PATH[STYLES[style]]),
                        'model': model, 'seed': seed, 'without_convlstm': not recurrent,
                        'reset_state_every': reset_every,
                        'checkpoint': repo_path(checkpoint), 'log_dir': repo_path(log_dir),
                        'metrics': repo_path(os.path.join(metrics_dir, 'metrics.json')),
                        'initialised_from': settings['initialised_from'],
                        'train_minutes': round(record['minutes'], 2), 'mean': {key: mean[key] for key in METRICS}})
    print(f"{name}: trained in {record['minutes']:.1f} min; validation MAD " +
          ', '.join(f"{result['model']} {result['mean']['MAD']:.2f}" for result in results), flush=True)
    return results, checkpoint


def read_record(path: str) -> dict | None:
    """A run's training.json: {'settings': how it is trained, 'minutes': time spent training}, or None."""
    if not os.path.exists(path):
        return None
    with open(path) as file:
        return json.load(file)


def repo_path(path: str) -> str:
    """path relative to the repository when inside it (so the report's paths hold wherever the repository is
    moved), else absolute."""
    path = os.path.abspath(path)
    return os.path.relpath(path, REPO) if os.path.commonpath([path, REPO]) == REPO else path


def run_script(log_path: str, threads: str | None, command: list[str]) -> None:
    """Run a script of the repository with this Python, its output appended to log_path (a resumed run keeps
    the earlier output); SystemExit if it fails."""
    environment = dict(os.environ, **({'OMP_NUM_THREADS': threads} if threads else {}))
    with open(log_path, 'a') as log:
        completed = subprocess.run([sys.executable, os.path.join(REPO, command[0]), *command[1:]],
                                   stdout=log, stderr=subprocess.STDOUT, env=environment)
    if completed.returncode != 0:
        with open(log_path) as log:
            last_line = (log.read().strip().splitlines() or [''])[-1]
        raise SystemExit(f'error: {command[0]} failed (exit {completed.returncode}): {last_line}\n'
                         f'its whole output: {log_path}')


def summarise(runs: list[dict], styles: list[str]) -> list[dict]:
    """One row per style and model: each metric's mean over the seeds and its sample standard deviation (None for
    a single seed)."""
    table = []
    for style in styles:
        for model in (WITH, RESET, WITHOUT):
            seeds = [run for run in runs if run['style'] == style and run['model'] == model]
            row = {'style': style, 'model': model, 'seeds': len(seeds)}
            for metric in METRICS:
                values = [run['mean'][metric] for run in seeds if run['mean'][metric] is not None]
                row[metric] = statistics.mean(values) if values else None
                row[f'{metric}_std'] = statistics.stdev(values) if len(values) > 1 else None
            table.append(row)
    return table


def ratio(table: list[dict], style: str, metric: str) -> float | None:
    """metric of w/ ConvLSTM divided by that of w/o ConvLSTM on `style` (None where undefined)."""
    value = {row['model']: row[metric] for row in table if row['style'] == style}
    return value[WITH] / value[WITHOUT] if value[WITH] is not None and value[WITHOUT] else None


def markdown_table(table: list[dict]) -> str:
    lines = ['| style | model | seeds | ' + ' | '.join(METRICS) + ' |', '| --- | --- | --- |' + ' --- |' * len(METRICS)]
    for row in table:
        cells = [format_cell(row[metric], row[f'{metric}_std']) for metric in METRICS]
        lines.append(f"| {row['style']} | {row['model']} | {row['seeds']} | " + ' | '.join(cells) + ' |')
    styles = dict.fromkeys(row['style'] for row in table)
    lines += ['', *(f'{style}: w/ ConvLSTM / w/o ConvLSTM = {format_cell(ratio(table, style, "MAD"), None)} (MAD), '
                    f'{format_cell(ratio(table, style, "dtSSD"), None)} (dtSSD)' for style in styles)]
    return '\n'.join(lines)


def format_cell(mean: float | None, std: float | None) -> str:
    """'1.23 ± 0.45', '1.23' for one seed, '-' where the metric is undefined (dtSSD of single-frame clips)."""
    if mean is None:
        return '-'
    return f'{mean:.2f}' + (f' ± {std:.2f}' if std is not None else '')


def write_report(args: argparse.Namespace, runs: list[dict], table: list[dict], minutes: float) -> None:
    os.makedirs(args.report_dir, exist_ok=True)
    base = os.path.join(args.report_dir, args.name)
    settings = {**vars(args), 'device_name': device_name(args.device), 'torch': torch.__version__,
                'minutes': round(minutes, 1),
                'command': ' '.join(['python', 'scripts/ablation.py', *sys.argv[1:]])}
    with atomic_write(base + '.json', 'w') as file:
        json.dump({'settings': settings, 'runs': runs, 'table': table}, file, indent=2)
    with atomic_write(base + '.csv', 'w', newline='') as file:
        writer = csv.DictWriter(file, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    training = sum(run['train_minutes'] for run in runs if run['model'] != RESET)  # RESET reuses WITH's training
    summary = (f"Made by `{settings['command']}` ({args.model_backbone}, {args.resolution}x{args.resolution}, "
               f"batch {args.batch_size}, sequence {args.seq_length}, {args.steps} steps per run, {args.jobs} at "
               f"once, on {settings['device_name']}, torch {torch.__version__}; training took {training:.0f} minutes "
               f"summed over the runs; this invocation of the script took {minutes:.1f} minutes). "
               f"Metrics on each style's synthetic valid split at the published scales (MAD and MSE x1e3, Grad and "
               f"Conn /1e3, dtSSD x1e2); ± is the standard deviation over seeds.\n\n" + markdown_table(table) + '\n')
    with atomic_write(base + '.md', 'w') as file:
        file.write(summary)
    insert_into_report(os.path.join(args.report_dir, 'README.md'), args.name, summary)


def insert_into_report(path: str, name: str, text: str) -> None:
    """Put text between the lines <!-- <name> table --> and <!-- end of <name> table --> of the Markdown file at
    path, if it exists and has both."""
    begin, end = f'<!-- {name} table -->\n', f'<!-- end of {name} table -->'
    if not os.path.isfile(path):
        return
    with open(path) as file:
        report = file.read()
    if begin in report and end in report.split(begin, 1)[1]:
        before, rest = report.split(begin, 1)
        with atomic_write(path, 'w') as file:
            file.write(before + begin + text + rest[rest.index(end):])


if __name__ == '__main__':
    main()
