r"""The ConvLSTM ablation: "w/ ConvLSTM" against "w/o ConvLSTM" on the built-in synthetic data, in one command.

    python scripts/ablation.py                 # the default budget: 64 minutes on a 2-core CPU

For each seed (0, 1, 2 by default) it trains the model with and without --without-convlstm under the same budget,
seed and data: first on the plain style, then on the camouflage style starting from that model's plain checkpoint
(a curriculum: figures first, then figures that only motion reveals; --camouflage-from-scratch turns it off).
Camouflage training clips keep some of the figures' plain appearance (--camouflage-strength, 0 to 1 by default);
its valid clips keep none, and the test reports every --test-strengths value.
Every run draws new synthetic clips for each step (no clip repeats), follows the same learning-rate schedule
(linear warm-up, cosine decay) and logs the validation MAD on the style's valid split --curve-points times, for the
learning curves. The finished runs are then evaluated once on the style's test split, which nothing else reads:
"w/ ConvLSTM" with the state carried through every clip, the same checkpoint with the state reset every
--seq-length frames, and "w/o ConvLSTM". The runs go through train.py and validate.py, the w/ and w/o models of
each seed side by side (--jobs at once; on the CPU each gets its share of the cores), and write
    checkpoint/<name>/<run>/, log/<name>/<run>/ (TensorBoard), output/<name>/<run>/metrics.json (validate.py)
    output/<name>/<run>-reset/metrics.json            the w/ ConvLSTM run evaluated with the state reset
    output/<name>/<run>/train.log, validate*.log      the scripts' own output
    output/<name>/<run>/training.json                 how the run was trained and for how many minutes
    report/<name>.csv, report/<name>.md               the table: MAD, MSE, Grad, Conn, dtSSD, mean and spread
    report/<name>.json                                the settings, every run's paths, numbers and learning curve,
                                                      the table, the paired per-seed differences and the score of
                                                      an empty matte
where <run> is <style>-<with|without>-convlstm-seed<seed>, and, when report/README.md has the lines
<!-- <name> table --> and <!-- end of <name> table -->, the table between them, so that the report shows the
numbers the script measured. A rerun skips training that has finished and resumes training that was
interrupted, so an interrupted ablation is continued by running the same command again.

A larger budget on a GPU, for example:
    python scripts/ablation.py --name ablation-gpu --model-backbone resnet50 --resolution 128 --steps 6000 \
        --camouflage-steps 6000 --jobs 1
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
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from atomic_file import atomic_write  # noqa: E402
from dataset import make_dataset  # noqa: E402
from checkpoint import newest_checkpoint, step_of  # noqa: E402
from data_path import SYNTHETIC_STYLES  # noqa: E402
from devices import device_name, low_precision_dtype, open_device  # noqa: E402
from errors import UserError  # noqa: E402
from metrics import ALPHA_METRICS  # noqa: E402
from model import BACKBONES  # noqa: E402

STYLES = {style: name for name, style in SYNTHETIC_STYLES.items()}  # style -> dataset name
WITH, RESET, WITHOUT = 'w/ ConvLSTM', 'w/ ConvLSTM, state reset every sequence', 'w/o ConvLSTM'
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument('--name', default='ablation', help='names the checkpoint, log, output and report files')
parser.add_argument('--styles', nargs='+', default=list(STYLES), choices=list(STYLES), help='synthetic styles')
parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2],
                    help='training seeds; the spread and the paired differences are over these')
parser.add_argument('--model-backbone', default='mobilenetv2', choices=BACKBONES, help='encoder')
parser.add_argument('--resolution', type=int, default=64, help='training and validation frame size (square)')
parser.add_argument('--batch-size', type=int, default=2, help='sequences per training step')
parser.add_argument('--seq-length', type=int, default=8, help='frames per training sequence and validation chunk')
parser.add_argument('--steps', type=int, default=1500, help='training steps of every plain run (the budget)')
parser.add_argument('--camouflage-steps', type=int, default=1500, help='training steps of every camouflage run')
parser.add_argument('--lr', type=float, default=1e-3,
                    help='peak learning rate of the encoder, ASPP and decoder alike (they start from random weights)')
parser.add_argument('--warmup-steps', type=int, default=100,
                    help='linear warm-up steps of every run, before the cosine decay to 0 at its last step')
parser.add_argument('--grad-clip', type=float, default=1.0, help="limit of the gradients' global L2 norm (0: none)")
parser.add_argument('--amp', action=argparse.BooleanOptionalAction, default=None,
                    help='mixed precision (bf16 on a CPU with bf16 instructions, fp16 on CUDA; default: where '
                         'available)')
parser.add_argument('--curve-points', type=int, default=5,
                    help='validations during each run, evenly spaced, for the learning curves (0: none)')
parser.add_argument('--valid-clips', type=int, default=16,
                    help="clips of each style's valid split (of its 32, 40 frames each) measured for the curves")
parser.add_argument('--test-clips', type=int, default=32,
                    help="clips of each style's test split the final table is measured on (of 40 frames)")
parser.add_argument('--camouflage-strength', type=float, nargs=2, default=(0.0, 1.0), metavar=('LOW', 'HIGH'),
                    help='camouflage strength range of the camouflage training clips (train.py); the valid clips of '
                         'the learning curves are fully camouflaged')
parser.add_argument('--test-strengths', type=float, nargs='+', default=[1.0, 0.5, 0.0],
                    help='camouflage strengths the camouflage models are tested at: the first for the table, all '
                         'for the dose-response table (the memory\'s advantage against how much appearance is left)')
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
    try:
        ablate(args)
    except UserError as error:
        sys.exit(f'error: {error}')
    except KeyboardInterrupt:  # train.py saved its checkpoint: the next run continues from there
        print('interrupted: run the same command again to continue', file=sys.stderr)
        sys.exit(130)


def ablate(args: argparse.Namespace) -> None:
    counts = (args.steps, args.camouflage_steps, args.jobs, args.batch_size, args.seq_length, args.valid_clips,
              args.test_clips)
    if min(counts) < 1 or args.resolution < 32 or min(args.warmup_steps, args.curve_points, args.grad_clip) < 0:
        raise UserError('--steps, --camouflage-steps, --jobs, --batch-size, --seq-length, --valid-clips and '
                        '--test-clips must be at least 1, --warmup-steps, --curve-points and --grad-clip at least 0, '
                        '--resolution at least 32')
    if not 0 <= args.camouflage_strength[0] <= args.camouflage_strength[1] <= 1 \
            or not all(0 <= strength <= 1 for strength in args.test_strengths):
        raise UserError('--camouflage-strength LOW HIGH: use 0 <= LOW <= HIGH <= 1; --test-strengths within 0..1')
    device = open_device(args.device)
    if args.amp and low_precision_dtype(device) is None:
        raise UserError(f'--amp: {device_name(device)} has no bfloat16 instructions: drop --amp')
    args.amp = low_precision_dtype(device) is not None if args.amp is None else args.amp
    if os.path.exists(args.report_dir) and not os.path.isdir(args.report_dir):
        raise UserError(f'--report-dir {args.report_dir} is a file: choose a folder')
    styles = [style for style in STYLES if style in args.styles]  # plain first: camouflage may start from it
    models = [(seed, recurrent) for seed in args.seeds for recurrent in (True, False)]
    started = time.time()
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(train_through_styles, args, styles, *model) for model in models]
        try:
            runs = [run for future in futures for run in future.result()]
        except BaseException:
            pool.shutdown(cancel_futures=True)  # models not yet started; the running ones finish their script
            raise
    in_table = [run for run in runs if run['in_table']]
    table, differences = summarise(in_table, styles), paired_differences(in_table, styles)
    dose = dose_response(runs, args.test_strengths) if 'camouflage' in styles else []
    empty = {style: empty_matte_mad(style, args) for style in styles}
    write_report(args, runs, table, differences, dose, empty, minutes=(time.time() - started) / 60)
    print(markdown_table(table, differences, dose, empty))
    print(f'wrote {os.path.join(args.report_dir, args.name)}.csv, .md and .json')


def train_through_styles(args: argparse.Namespace, styles: list[str], seed: int, recurrent: bool) -> list[dict]:
    """One model (w/ or w/o ConvLSTM) and seed through the styles in order; camouflage starts from the plain
    checkpoint (a curriculum: figures first, then figures that only motion reveals) unless --camouflage-from-scratch
    or plain is not among the styles."""
    results, initialisation = [], None
    for style in styles:
        checkpoint, record = train_run(args, style, seed, recurrent, initialisation)
        results += test_run(args, style, seed, recurrent, checkpoint, record)
        if style == 'plain' and not args.camouflage_from_scratch:
            initialisation = checkpoint
    return results


def run_folders(args: argparse.Namespace, style: str, seed: int, recurrent: bool) -> tuple[str, str, str, str]:
    """(run name, checkpoint folder, TensorBoard folder, output folder) of one run."""
    name = f"{style}-{'with' if recurrent else 'without'}-convlstm-seed{seed}"
    return (name, os.path.join(args.checkpoint_root, args.name, name), os.path.join(args.log_root, args.name, name),
            os.path.join(args.output_root, args.name, name))


def threads_per_run(args: argparse.Namespace) -> str | None:
    """OMP_NUM_THREADS of each script on the CPU: the cores shared among the --jobs runs at once."""
    return str(max(1, (os.cpu_count() or 1) // args.jobs)) if args.device == 'cpu' else None


def train_run(args: argparse.Namespace, style: str, seed: int, recurrent: bool,
              initialisation: str | None) -> tuple[str, dict]:
    """Train one run (or finish it), from the checkpoint `initialisation` if given, through train.py. Returns its
    final checkpoint and its training record {'settings': how it was trained, 'minutes': time spent training}."""
    name, checkpoint_dir, log_dir, output_dir = run_folders(args, style, seed, recurrent)
    os.makedirs(output_dir, exist_ok=True)
    steps = args.camouflage_steps if style == 'camouflage' else args.steps
    curve_interval = max(1, steps // args.curve_points) if args.curve_points else 0

    # What the run is trained with, and for how long, is kept beside its outputs: a rerun reuses finished training
    # only if it was made the same way, and still reports its time.
    record_path = os.path.join(output_dir, 'training.json')
    settings = {'model_backbone': args.model_backbone, 'resolution': args.resolution, 'batch_size': args.batch_size,
                'seq_length': args.seq_length, 'steps': steps, 'lr': args.lr, 'lr_schedule': 'cosine',
                'warmup_steps': args.warmup_steps, 'grad_clip': args.grad_clip, 'amp': args.amp, 'seed': seed,
                'without_convlstm': not recurrent,
                'curve_interval': curve_interval, 'valid_clips': args.valid_clips,
                'camouflage_strength': list(args.camouflage_strength) if style == 'camouflage' else None,
                'initialised_from': initialisation and repo_path(initialisation)}
    record = read_record(record_path)
    if record is not None and record['settings'] != settings:
        raise UserError(f'{checkpoint_dir} holds a run trained with other settings ({record["settings"]}): '
                        f'choose another --name, or delete it and {output_dir}')
    checkpoint = newest_checkpoint(checkpoint_dir)
    if checkpoint is not None and step_of(checkpoint) >= steps:
        if record is None:
            raise UserError(f'{checkpoint} is finished but {record_path} is missing, so how it was trained is '
                            f'unknown: choose another --name, or delete {checkpoint_dir} and {output_dir}')
        return checkpoint, record
    started = time.time()
    run_script(os.path.join(output_dir, 'train.log'), threads_per_run(args), [
        'train.py', '--dataset-name', STYLES[style], '--model-backbone', args.model_backbone,
        '--model-name', name, '--resolution', str(args.resolution), '--batch-size', str(args.batch_size),
        '--seq-length', str(args.seq_length), '--max-steps', str(steps), '--epoch-end', str(10 ** 9),
        '--lr-backbone', str(args.lr), '--lr-aspp', str(args.lr), '--lr-decoder', str(args.lr),
        '--lr-schedule', 'cosine', '--warmup-steps', str(args.warmup_steps), '--grad-clip', str(args.grad_clip),
        '--amp' if args.amp else '--no-amp',
        '--seed', str(seed), '--device', args.device, '--num-workers', str(args.num_workers),
        '--checkpoint-dir', checkpoint_dir, '--log-dir', log_dir, '--resume',
        '--log-train-loss-interval', str(max(1, steps // 100)), '--log-valid-interval', str(curve_interval),
        '--synthetic-clips', str(args.valid_clips),
        '--camouflage-strength', *(str(value) for value in args.camouflage_strength),
        '--log-train-images-interval', str(steps), '--checkpoint-interval', str(max(1, steps // 4)),
        '--keep-checkpoints', '1', *([] if recurrent else ['--without-convlstm']),
        *(['--model-pretrain-initialization', initialisation] if initialisation else [])])
    checkpoint = newest_checkpoint(checkpoint_dir)
    if checkpoint is None or step_of(checkpoint) < steps:  # never test a run that stopped early
        raise UserError(f'train.py ended before step {steps} of {checkpoint_dir}: see {output_dir}/train.log, '
                        f'then run the ablation again to continue')
    record = {'settings': settings, 'minutes': (record or {'minutes': 0})['minutes'] + (time.time() - started) / 60}
    with atomic_write(record_path, 'w') as file:
        json.dump(record, file)
    return checkpoint, record


def test_run(args: argparse.Namespace, style: str, seed: int, recurrent: bool, checkpoint: str,
             record: dict) -> list[dict]:
    """Evaluate a trained run on the style's test split through validate.py: one result per evaluation (w/ ConvLSTM
    also with the state reset every --seq-length frames; camouflage at every --test-strengths value), with paths,
    the mean metrics and the run's learning curve."""
    name, checkpoint_dir, log_dir, output_dir = run_folders(args, style, seed, recurrent)
    curve = learning_curve(log_dir)
    # (model, state reset every, camouflage strength, output suffix): the table's strength first, then the others.
    strengths = args.test_strengths if style == 'camouflage' else [1.0]
    others = [(strength, f'-strength{strength:g}') for strength in strengths[1:]]
    evaluations = [(WITH, 0, strengths[0], ''), (RESET, args.seq_length, strengths[0], '-reset'),
                   *((WITH, 0, strength, suffix) for strength, suffix in others)] if recurrent else \
        [(WITHOUT, 0, strengths[0], ''), *((WITHOUT, 0, strength, suffix) for strength, suffix in others)]
    results = []
    for model, reset_every, strength, suffix in evaluations:
        metrics_dir = output_dir + suffix
        run_script(os.path.join(output_dir, f'validate{suffix}.log'), threads_per_run(args), [
            'validate.py', '--dataset-name', STYLES[style], '--split', 'test', '--synthetic-clips',
            str(args.test_clips), '--model-backbone', args.model_backbone,
            '--model-checkpoint', checkpoint, '--output-path', metrics_dir, '--seq-length', str(args.seq_length),
            '--reset-state-every', str(reset_every), '--resolution', str(args.resolution), '--device', args.device,
            '--camouflage-strength', str(strength), *([] if recurrent else ['--without-convlstm'])])
        with open(os.path.join(metrics_dir, 'metrics.json')) as file:
            mean = json.load(file)['mean']
        results.append({'style': style, 'dataset': STYLES[style], 'model': model, 'seed': seed,
                        'camouflage_strength': strength if style == 'camouflage' else None,
                        'in_table': strength == strengths[0],
                        'without_convlstm': not recurrent, 'reset_state_every': reset_every,
                        'checkpoint': repo_path(checkpoint), 'log_dir': repo_path(log_dir),
                        'metrics': repo_path(os.path.join(metrics_dir, 'metrics.json')),
                        'initialised_from': record['settings']['initialised_from'],
                        'train_minutes': round(record['minutes'], 2),
                        'mean': {key: mean[key] for key in ALPHA_METRICS},
                        'valid_mad_curve': curve if model != RESET and strength == strengths[0] else []})
    print(f"{name}: trained in {record['minutes']:.1f} min; test MAD " + ', '.join(
        f"{result['model']}" + (f" (strength {result['camouflage_strength']:g})" if style == 'camouflage' else '')
        + f" {result['mean']['MAD']:.2f}" for result in results), flush=True)
    return results


def learning_curve(log_dir: str) -> list[list[float]]:
    """[step, validation MAD] pairs that train.py logged to TensorBoard in log_dir (valid/MAD), by step; a step
    logged twice (a resumed run repeats the steps after its last checkpoint) keeps the later value."""
    curve = {}
    for name in sorted(os.listdir(log_dir)) if os.path.isdir(log_dir) else []:
        events = EventAccumulator(os.path.join(log_dir, name))
        events.Reload()
        if 'valid/MAD' in events.Tags()['scalars']:
            curve.update({event.step: event.value for event in events.Scalars('valid/MAD')})
    return [[step, curve[step]] for step in sorted(curve)]


def empty_matte_mad(style: str, args: argparse.Namespace) -> float:
    """MAD (x1e3) of an alpha of 0 everywhere on the style's test split: the score of predicting no person."""
    dataset = make_dataset(STYLES[style], 'test', args.seq_length, args.resolution, synthetic_clips=args.test_clips)
    total, frames = 0.0, 0
    for index in range(len(dataset)):
        _, true_pha, _ = dataset[index]
        total += true_pha.sum().item() / true_pha[0].numel()
        frames += len(true_pha)
    return total / frames * 1e3


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
    the earlier output); UserError naming its log if it fails."""
    environment = dict(os.environ, **({'OMP_NUM_THREADS': threads} if threads else {}))
    with open(log_path, 'a') as log:
        completed = subprocess.run([sys.executable, os.path.join(REPO, command[0]), *command[1:]],
                                   stdout=log, stderr=subprocess.STDOUT, env=environment)
    if completed.returncode != 0:
        with open(log_path) as log:
            last_line = (log.read().strip().splitlines() or [''])[-1]
        raise UserError(f'{command[0]} failed (exit {completed.returncode}): {last_line}\n'
                        f'its whole output: {log_path}')


def summarise(runs: list[dict], styles: list[str]) -> list[dict]:
    """One row per style and model: each metric's mean over the seeds and its sample standard deviation (None for
    a single seed)."""
    table = []
    for style in styles:
        for model in (WITH, RESET, WITHOUT):
            seeds = [run for run in runs if run['style'] == style and run['model'] == model]
            row = {'style': style, 'model': model, 'seeds': len(seeds)}
            for metric in ALPHA_METRICS:
                row[metric], row[f'{metric}_std'] = mean_and_std(
                    [run['mean'][metric] for run in seeds if run['mean'][metric] is not None])
            table.append(row)
    return table


def paired_differences(runs: list[dict], styles: list[str]) -> list[dict]:
    """Per style, the seed-by-seed comparisons of the same seed's models: MAD and dtSSD of w/ ConvLSTM minus w/o
    ConvLSTM and their ratio, and MAD of the state carried minus reset every sequence; per seed, then their mean and
    standard deviation over seeds. Negative differences and ratios below 1 favour the memory."""
    rows = []
    for style in styles:
        by_seed = {}
        for run in runs:
            if run['style'] == style:
                by_seed.setdefault(run['seed'], {})[run['model']] = run['mean']
        seeds = sorted(seed for seed, models in by_seed.items() if len(models) == 3)
        per_seed = {seed: {'MAD_with_minus_without': by_seed[seed][WITH]['MAD'] - by_seed[seed][WITHOUT]['MAD'],
                           'MAD_with_over_without': by_seed[seed][WITH]['MAD'] / by_seed[seed][WITHOUT]['MAD'],
                           'dtSSD_with_minus_without': by_seed[seed][WITH]['dtSSD'] - by_seed[seed][WITHOUT]['dtSSD'],
                           'MAD_carried_minus_reset': by_seed[seed][WITH]['MAD'] - by_seed[seed][RESET]['MAD']}
                    for seed in seeds}
        row = {'style': style, 'seeds': seeds, 'per_seed': per_seed}
        for key in ('MAD_with_minus_without', 'MAD_with_over_without', 'dtSSD_with_minus_without',
                    'MAD_carried_minus_reset'):
            row[key], row[f'{key}_std'] = mean_and_std([per_seed[seed][key] for seed in seeds])
        rows.append(row)
    return rows


def dose_response(runs: list[dict], strengths: list[float]) -> list[dict]:
    """Per camouflage test strength: the MAD of w/ and w/o ConvLSTM (state carried), mean and standard deviation over
    seeds, and the paired per-seed difference w/ minus w/o."""
    rows = []
    for strength in strengths:
        mad = {(run['model'], run['seed']): run['mean']['MAD'] for run in runs
               if run['style'] == 'camouflage' and run['camouflage_strength'] == strength}
        seeds = sorted({seed for model, seed in mad if (WITH, seed) in mad and (WITHOUT, seed) in mad})
        row = {'strength': strength, 'seeds': seeds}
        for key, values in (('with', [mad[WITH, seed] for seed in seeds]),
                            ('without', [mad[WITHOUT, seed] for seed in seeds]),
                            ('with_minus_without', [mad[WITH, seed] - mad[WITHOUT, seed] for seed in seeds])):
            row[key], row[f'{key}_std'] = mean_and_std(values)
        rows.append(row)
    return rows


def mean_and_std(values: list[float]) -> tuple[float | None, float | None]:
    """The mean (None without values) and the sample standard deviation (None below two values)."""
    return (statistics.mean(values) if values else None), (statistics.stdev(values) if len(values) > 1 else None)


def markdown_table(table: list[dict], differences: list[dict], dose: list[dict], empty: dict[str, float]) -> str:
    lines = ['| style | model | seeds | ' + ' | '.join(ALPHA_METRICS) + ' |',
             '| --- | --- | --- |' + ' --- |' * len(ALPHA_METRICS)]
    for row in table:
        cells = [format_cell(row[metric], row[f'{metric}_std']) for metric in ALPHA_METRICS]
        lines.append(f"| {row['style']} | {row['model']} | {row['seeds']} | " + ' | '.join(cells) + ' |')
    for style, mad in empty.items():
        lines.append(f'| {style} | empty matte (alpha 0) | - | {mad:.2f} |' + ' |' * (len(ALPHA_METRICS) - 1))
    lines += ['', 'Paired by seed (w/ minus w/o ConvLSTM, same seed; negative favours the memory):', '',
              '| style | seeds | MAD difference | MAD ratio | dtSSD difference | MAD carried minus reset | '
              'MAD ratio per seed |', '| --- | --- | --- | --- | --- | --- | --- |']
    for row in differences:
        per_seed = ', '.join(f"{seed}: {values['MAD_with_over_without']:.2f}"
                             for seed, values in row['per_seed'].items())
        cells = [format_cell(row[key], row[f'{key}_std']) for key in (
            'MAD_with_minus_without', 'MAD_with_over_without', 'dtSSD_with_minus_without', 'MAD_carried_minus_reset')]
        lines.append(f"| {row['style']} | {len(row['seeds'])} | " + ' | '.join(cells) + f' | {per_seed} |')
    if dose:
        lines += ['', 'Camouflage MAD against camouflage strength (1: nothing of the figures\' plain appearance '
                  'left; 0: plain figures, one still decoy among them):', '',
                  '| strength | seeds | w/ ConvLSTM | w/o ConvLSTM | w/ minus w/o (paired) |',
                  '| --- | --- | --- | --- | --- |']
        lines += [f"| {row['strength']:g} | {len(row['seeds'])} | " + ' | '.join(
            format_cell(row[key], row[f'{key}_std']) for key in ('with', 'without', 'with_minus_without')) + ' |'
            for row in dose]
    return '\n'.join(lines)


def format_cell(mean: float | None, std: float | None) -> str:
    """'1.23 ± 0.45', '1.23' for one seed, '-' where the metric is undefined (dtSSD of single-frame clips)."""
    if mean is None:
        return '-'
    return f'{mean:.2f}' + (f' ± {std:.2f}' if std is not None else '')


def write_report(args: argparse.Namespace, runs: list[dict], table: list[dict], differences: list[dict],
                 dose: list[dict], empty: dict[str, float], minutes: float) -> None:
    os.makedirs(args.report_dir, exist_ok=True)
    base = os.path.join(args.report_dir, args.name)
    settings = {**vars(args), 'device_name': device_name(args.device), 'torch': torch.__version__,
                'minutes': round(minutes, 1),
                'command': ' '.join(['python', 'scripts/ablation.py', *sys.argv[1:]])}
    with atomic_write(base + '.json', 'w') as file:
        json.dump({'settings': settings, 'runs': runs, 'table': table, 'paired_differences': differences,
                   'dose_response': dose, 'empty_matte_MAD': empty}, file, indent=2)
    with atomic_write(base + '.csv', 'w', newline='') as file:
        writer = csv.DictWriter(file, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    training = sum(run['train_minutes'] for run in runs if run['model'] != RESET and run['in_table'])
    precision = 'bf16' if args.amp and args.device == 'cpu' else 'fp16' if args.amp else 'fp32'
    summary = (f"Made by `{settings['command']}` ({args.model_backbone} from random weights, "
               f"{args.resolution}x{args.resolution}, batch {args.batch_size}, sequence {args.seq_length}, "
               f"{args.steps} steps per plain and {args.camouflage_steps} per camouflage run (warm-up "
               f"{args.warmup_steps}, cosine decay from {args.lr:g}), camouflage training strength "
               f"{args.camouflage_strength[0]:g} to {args.camouflage_strength[1]:g}, {precision}, "
               f"{args.jobs} at once, on {settings['device_name']}, torch {torch.__version__}; training took "
               f"{training:.0f} minutes summed over the runs; this invocation of the script took {minutes:.1f} "
               f"minutes). Metrics on each style's synthetic test split ({args.test_clips} of its clips, 40 frames "
               f"each, never used for training or choices) at the published scales (MAD and MSE x1e3, Grad and "
               f"Conn /1e3, dtSSD x1e2), camouflage at strength {args.test_strengths[0]:g}; ± is the standard "
               f"deviation over seeds.\n\n"
               + markdown_table(table, differences, dose, empty) + '\n')
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
