r"""The ConvLSTM ablation: "w/ ConvLSTM" against "w/o ConvLSTM" on the built-in synthetic data, in one command.

    python scripts/ablation.py                 # the default budget: about 2 hours on a 2-core CPU

For each seed (0 to 4 by default) it trains the model with ConvLSTM on the plain style from random weights; then,
from that one plain checkpoint, the camouflage style twice: with ConvLSTM and without (--without-convlstm), so that
the two camouflage models differ in nothing but the memory (--camouflage-from-scratch starts both from random
weights instead). Camouflage training clips keep some of the figures' plain appearance (--camouflage-strength);
its valid clips keep none, and the test reports every --test-strengths value.
Every run draws new synthetic clips for each step (no clip repeats), follows the same learning-rate schedule
(linear warm-up, cosine decay) and logs the validation MAD on the style's valid split --curve-points times, for the
learning curves. The finished runs are then evaluated once on the style's test split, which nothing else reads:
    w/ ConvLSTM                                the state carried through every 40-frame clip
    w/ ConvLSTM, state reset every sequence    the same checkpoint, state reset every --seq-length frames
    w/ ConvLSTM, memory off at test            the same checkpoint, state reset at every frame
    w/o ConvLSTM                               (camouflage) trained and tested with the state zero at every frame
beside two baselines that learn nothing (baselines.py): the empty matte and the causal median background, whose
threshold is chosen on the valid split. Every MAD is also split into clips whose camera pans and clips whose camera
rests, and by frame index within the clips (memory shows as an error that falls, against the empty matte's, as
frames accumulate).
Comparisons pair the models of each seed and give a 95% t-interval over seeds; a target is met only where its
interval says so. The runs go through train.py and validate.py (--jobs at once; on the CPU each gets its share of
the cores), and write
    checkpoint/<name>/<run>/, log/<name>/<run>/ (TensorBoard), output/<name>/<run>/metrics.json (validate.py)
    output/<name>/<run>-reset/, -off/, -strength<s>/  the other evaluations of the run
    output/<name>/<run>/train.log, validate*.log      the scripts' own output
    output/<name>/<run>/training.json                 how the run was trained and for how many minutes
    report/<name>.csv, report/<name>.md               the tables: metrics (mean ± standard deviation over seeds),
                                                      breakdowns, baselines, paired comparisons, targets
    report/<name>.json                                the settings, every run's paths, numbers, breakdown and
                                                      learning curve, the baselines, the tables and the targets
where <run> is <style>-<with|without>-convlstm-seed<seed>, and, when report/README.md has the lines
<!-- <name> table --> and <!-- end of <name> table -->, the tables between them, so that the report shows the
numbers the script measured. A rerun skips training that has finished and resumes training that was
interrupted, so an interrupted ablation is continued by running the same command again. Ctrl-C or SIGTERM reaches
the train.py or validate.py it runs (train.py saves its steps); it waits for them, then exits with 130 or 143.

A larger budget on a GPU, for example:
    python scripts/ablation.py --name ablation-gpu --model-backbone resnet50 --resolution 128 --steps 6000 \
        --camouflage-steps 6000 --jobs 1
"""
import argparse
import csv
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import baselines  # noqa: E402
from atomic_file import atomic_write  # noqa: E402
from checkpoint import newest_checkpoint, step_of  # noqa: E402
from data_path import SYNTHETIC_STYLES  # noqa: E402
from dataset import make_dataset  # noqa: E402
from dataset.synthetic import EVAL_CLIPS, EVAL_FRAMES  # noqa: E402
from devices import device_name, low_precision_dtype, open_device  # noqa: E402
from errors import UserError  # noqa: E402
from loss import PHA_LOSSES  # noqa: E402
from metrics import ALPHA_METRICS  # noqa: E402
from model import BACKBONES  # noqa: E402

STYLES = {style: name for name, style in SYNTHETIC_STYLES.items()}  # style -> dataset name
WITH, RESET, OFF, WITHOUT = ('w/ ConvLSTM', 'w/ ConvLSTM, state reset every sequence',
                             'w/ ConvLSTM, memory off at test', 'w/o ConvLSTM')
MODELS = (WITH, RESET, OFF, WITHOUT)
EMPTY, MEDIAN = 'empty matte (alpha 0)', 'causal median background'
# The memory's signature: MAD falls from a clip's first frames, where nothing is remembered yet, to its later ones.
EARLY_FRAMES, LATE_FRAMES = range(0, 5), range(20, EVAL_FRAMES)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument('--name', default='ablation', help='names the checkpoint, log, output and report files')
parser.add_argument('--styles', nargs='+', default=list(STYLES), choices=list(STYLES), help='synthetic styles')
parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2, 3, 4],
                    help='training seeds; the spread, the paired comparisons and their intervals are over these')
parser.add_argument('--model-backbone', default='mobilenetv2', choices=BACKBONES, help='encoder')
parser.add_argument('--resolution', type=int, default=64, help='training and validation frame size (square)')
parser.add_argument('--batch-size', type=int, default=2, help='sequences per training step')
parser.add_argument('--seq-length', type=int, default=8,
                    help='frames per training sequence (a window of a 40-frame clip) and per validation chunk')
parser.add_argument('--steps', type=int, default=500, help='training steps of every plain run')
parser.add_argument('--camouflage-steps', type=int, default=600, help='training steps of every camouflage run')
parser.add_argument('--lr', type=float, default=1e-3,
                    help='peak learning rate of the encoder, ASPP and decoder alike (they start from random weights)')
parser.add_argument('--warmup-steps', type=int, default=100,
                    help='linear warm-up steps of every run, before the cosine decay to 0 at its last step')
parser.add_argument('--grad-clip', type=float, default=1.0, help="limit of the gradients' global L2 norm (0: none)")
parser.add_argument('--pha-loss', default='l1', choices=PHA_LOSSES, help="alpha's loss in training (train.py)")
parser.add_argument('--amp', action=argparse.BooleanOptionalAction, default=None,
                    help='mixed precision (bf16 on a CPU with bf16 instructions, fp16 on CUDA; default: where '
                         'available)')
parser.add_argument('--curve-points', type=int, default=4,
                    help='validations during each run, evenly spaced, for the learning curves (0: none)')
parser.add_argument('--valid-clips', type=int, default=8,
                    help="clips of each style's valid split (of its 32, 40 frames each) measured for the curves and "
                         "the median background's threshold")
parser.add_argument('--test-clips', type=int, default=32,
                    help="clips of each style's test split the final tables are measured on (of 40 frames)")
parser.add_argument('--camouflage-strength', type=float, nargs=2, default=(0.5, 1.0), metavar=('LOW', 'HIGH'),
                    help='camouflage strength range of the camouflage training clips (train.py; 0.5 to 1 measured a '
                         'little better than 0 to 1 in the report\'s probes); the valid clips of the learning curves '
                         'are fully camouflaged')
parser.add_argument('--test-strengths', type=float, nargs='+', default=[1.0, 0.5, 0.0],
                    help='camouflage strengths the camouflage models are tested at: the first for the tables, all '
                         'for the dose-response table (the memory\'s advantage against how much appearance is left)')
parser.add_argument('--camouflage-from-scratch', action='store_true',
                    help='train camouflage from random weights instead of from the seed\'s plain checkpoint')
parser.add_argument('--jobs', type=int, default=2, help='training runs at once')
parser.add_argument('--num-workers', type=int, default=0, help='DataLoader workers of each training run')
parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu', help='torch device')
parser.add_argument('--checkpoint-root', default='checkpoint', help='checkpoints go to <this>/<name>/<run>')
parser.add_argument('--log-root', default='log', help='TensorBoard logs go to <this>/<name>/<run>')
parser.add_argument('--output-root', default='output', help='validation outputs go to <this>/<name>/<run>')
parser.add_argument('--report-dir', default='report', help='folder of <name>.csv, <name>.md and <name>.json')


def main() -> None:
    args = parser.parse_args()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, SCRIPTS.stop)
    try:
        ablate(args)
    except UserError as error:
        sys.exit(f'error: {error}')
    except Stopped as stopped:  # train.py saved its checkpoint: the next run continues from there
        print(f'interrupted by {signal.Signals(stopped.signum).name}: the running scripts were stopped (train.py '
              f'saves its steps); run the same command again to continue', file=sys.stderr)
        sys.exit(128 + stopped.signum)


class Stopped(BaseException):
    """SIGINT or SIGTERM reached the ablation; raised in the main thread, and by a script started after it."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class Scripts:
    """The train.py and validate.py processes the ablation runs, so that a SIGINT or SIGTERM to it reaches them.

    Each runs in a session of its own: a terminal's Ctrl-C reaches the ablation alone, which passes it on once. After
    a stop no script starts, and the ablation waits for the running ones (ablate's pool) before it exits.
    """

    def __init__(self):
        self.lock = threading.RLock()  # re-entrant: the signal handler runs in the main thread, between any two lines
        self.running: set[subprocess.Popen] = set()
        self.stop_signal = 0

    def run(self, command: list[str], **popen_kwargs) -> int:
        """Run `command` to its end; its exit status. Stopped if the ablation is stopping."""
        with self.lock:
            if self.stop_signal:
                raise Stopped(self.stop_signal)
            process = subprocess.Popen(command, start_new_session=True, **popen_kwargs)
            self.running.add(process)
        try:
            return process.wait()
        finally:
            with self.lock:
                self.running.discard(process)

    def stop(self, signum: int, frame) -> None:
        """The handler of SIGINT and SIGTERM: passes the signal on to the running scripts; the first one raises
        Stopped in the main thread."""
        with self.lock:
            first, self.stop_signal = not self.stop_signal, self.stop_signal or signum
            for process in self.running:
                process.send_signal(signum)
        if first:
            raise Stopped(signum)


SCRIPTS = Scripts()


def ablate(args: argparse.Namespace) -> None:
    check_flags(args)
    device = open_device(args.device)
    if args.amp and low_precision_dtype(device) is None:
        raise UserError(f'--amp: {device_name(device)} has no bfloat16 instructions: drop --amp')
    args.amp = low_precision_dtype(device) is not None if args.amp is None else args.amp
    styles = [style for style in STYLES if style in args.styles]  # plain first: camouflage starts from it
    started = time.time()
    with ThreadPoolExecutor(args.jobs) as pool:
        # Every plain run is queued before any camouflage run, so a camouflage run that waits for its seed's plain
        # checkpoint never waits for a run that no worker has started.
        plain = {seed: pool.submit(train_and_test, args, 'plain', seed, True, None)
                 for seed in args.seeds if 'plain' in styles}
        futures = list(plain.values()) + [
            pool.submit(train_and_test, args, 'camouflage', seed, recurrent,
                        None if args.camouflage_from_scratch else plain.get(seed))
            for seed in args.seeds for recurrent in (True, False) if 'camouflage' in styles]
        try:
            runs = [result for future in futures for result in future.result()[1]]
        except BaseException:
            # Cancels the runs not yet started and waits for the running ones: after a stop signal their scripts end
            # soon (Scripts.stop); after an error they finish.
            pool.shutdown(cancel_futures=True)
            raise
    base = {style: measure_baselines(args, style) for style in styles}
    add_falls(runs, base)
    report = summarise(args, styles, runs, base)
    write_report(args, report, minutes=(time.time() - started) / 60)
    print(markdown_tables(report))
    print(f'wrote {os.path.join(args.report_dir, args.name)}.csv, .md and .json')


def check_flags(args: argparse.Namespace) -> None:
    counts = (args.steps, args.camouflage_steps, args.jobs, args.batch_size, args.seq_length, args.valid_clips,
              args.test_clips)
    if min(counts) < 1 or args.resolution < 32 or min(args.warmup_steps, args.curve_points, args.grad_clip) < 0:
        raise UserError('--steps, --camouflage-steps, --jobs, --batch-size, --seq-length, --valid-clips and '
                        '--test-clips must be at least 1, --warmup-steps, --curve-points and --grad-clip at least 0, '
                        '--resolution at least 32')
    if not 0 <= args.camouflage_strength[0] <= args.camouflage_strength[1] <= 1 \
            or not all(0 <= strength <= 1 for strength in args.test_strengths):
        raise UserError('--camouflage-strength LOW HIGH: use 0 <= LOW <= HIGH <= 1; --test-strengths within 0..1')
    if max(args.valid_clips, args.test_clips) > EVAL_CLIPS:
        raise UserError(f'--valid-clips and --test-clips: the synthetic valid and test splits have {EVAL_CLIPS} clips '
                        f'each: use 1 to {EVAL_CLIPS}')
    if os.path.exists(args.report_dir) and not os.path.isdir(args.report_dir):
        raise UserError(f'--report-dir {args.report_dir} is a file: choose a folder')


def train_and_test(args: argparse.Namespace, style: str, seed: int, recurrent: bool,
                   initialisation: Future | None) -> tuple[str, list[dict]]:
    """Train one run (from the final checkpoint of the run `initialisation` will give, if any) and evaluate it.
    Returns its final checkpoint and its evaluations."""
    start = initialisation.result()[0] if initialisation else None
    checkpoint, record = train_run(args, style, seed, recurrent, start)
    return checkpoint, test_run(args, style, seed, recurrent, checkpoint, record)


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
                'warmup_steps': args.warmup_steps, 'grad_clip': args.grad_clip, 'pha_loss': args.pha_loss,
                'amp': args.amp, 'seed': seed, 'without_convlstm': not recurrent,
                'curve_interval': curve_interval, 'valid_clips': args.valid_clips,
                'camouflage_strength': list(args.camouflage_strength) if style == 'camouflage' else None,
                'initialised_from': initialisation and repo_path(initialisation)}
    record = read_record(record_path)
    if record is not None and record['settings'] != settings:
        raise UserError(f'{checkpoint_dir} holds a run trained with other settings ({record["settings"]}): '
                        f'choose another --name, or delete it and {output_dir}')
    checkpoint = newest_checkpoint(checkpoint_dir)
    minutes = training_minutes(record, checkpoint)
    if checkpoint is not None and step_of(checkpoint) >= steps:
        if record is None:
            raise UserError(f'{checkpoint} is finished but {record_path} is missing, so how it was trained is '
                            f'unknown: choose another --name, or delete {checkpoint_dir} and {output_dir}')
        if 'started' in record:  # finished after its ablation was killed: count the time it took
            record = {'settings': settings, 'minutes': minutes}
            with atomic_write(record_path, 'w') as file:
                json.dump(record, file)
        return checkpoint, record
    # Written before training, so that training which ends without this process (killed by SIGKILL) is still known.
    started = time.time()
    with atomic_write(record_path, 'w') as file:
        json.dump({'settings': settings, 'minutes': minutes, 'started': started}, file)
    run_script(os.path.join(output_dir, 'train.log'), threads_per_run(args), [
        'train.py', '--dataset-name', STYLES[style], '--model-backbone', args.model_backbone,
        '--model-name', name, '--resolution', str(args.resolution), '--batch-size', str(args.batch_size),
        '--seq-length', str(args.seq_length), '--max-steps', str(steps), '--epoch-end', str(10 ** 9),
        '--lr-backbone', str(args.lr), '--lr-aspp', str(args.lr), '--lr-decoder', str(args.lr),
        '--lr-schedule', 'cosine', '--warmup-steps', str(args.warmup_steps), '--grad-clip', str(args.grad_clip),
        '--pha-loss', args.pha_loss, '--amp' if args.amp else '--no-amp',
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
    record = {'settings': settings, 'minutes': minutes + (time.time() - started) / 60}
    with atomic_write(record_path, 'w') as file:
        json.dump(record, file)
    return checkpoint, record


def evaluations(args: argparse.Namespace, style: str, recurrent: bool) -> list[tuple[str, int, float, str]]:
    """(model, reset the state every N frames (0: never), camouflage strength, output folder suffix) of each
    evaluation of a run: the tables' strength first, then the dose-response's other strengths."""
    strengths = args.test_strengths if style == 'camouflage' else [1.0]
    others = [(strength, f'-strength{strength:g}') for strength in strengths[1:]]
    if not recurrent:
        return [(WITHOUT, 0, strengths[0], ''), *((WITHOUT, 0, strength, suffix) for strength, suffix in others)]
    return [(WITH, 0, strengths[0], ''), (RESET, args.seq_length, strengths[0], '-reset'),
            (OFF, 1, strengths[0], '-off'), *((WITH, 0, strength, suffix) for strength, suffix in others)]


def test_run(args: argparse.Namespace, style: str, seed: int, recurrent: bool, checkpoint: str,
             record: dict) -> list[dict]:
    """Evaluate a trained run on the style's test split through validate.py: one result per evaluation with paths,
    the mean metrics, the MAD breakdown and the run's learning curve."""
    name, checkpoint_dir, log_dir, output_dir = run_folders(args, style, seed, recurrent)
    curve = learning_curve(log_dir)
    pans = camera_pans(args, style)
    results, planned = [], evaluations(args, style, recurrent)
    for model, reset_every, strength, suffix in planned:
        metrics_dir = output_dir + suffix
        run_script(os.path.join(output_dir, f'validate{suffix}.log'), threads_per_run(args), [
            'validate.py', '--dataset-name', STYLES[style], '--split', 'test', '--synthetic-clips',
            str(args.test_clips), '--model-backbone', args.model_backbone,
            '--model-checkpoint', checkpoint, '--output-path', metrics_dir, '--seq-length', str(args.seq_length),
            '--reset-state-every', str(reset_every), '--resolution', str(args.resolution), '--device', args.device,
            '--camouflage-strength', str(strength), *([] if recurrent else ['--without-convlstm'])])
        with open(os.path.join(metrics_dir, 'metrics.json')) as file:
            validated = json.load(file)
        in_table = strength == planned[0][2]  # the tables' strength
        clip_mads = {clip: [row['MAD'] for row in result['frames']] for clip, result in validated['clips'].items()}
        results.append({'style': style, 'dataset': STYLES[style], 'model': model, 'seed': seed,
                        'camouflage_strength': strength if style == 'camouflage' else None, 'in_table': in_table,
                        'without_convlstm': not recurrent, 'reset_state_every': reset_every,
                        'checkpoint': repo_path(checkpoint), 'log_dir': repo_path(log_dir),
                        'metrics': repo_path(os.path.join(metrics_dir, 'metrics.json')),
                        'initialised_from': record['settings']['initialised_from'],
                        'train_minutes': round(record['minutes'], 2),
                        'mean': {key: validated['mean'][key] for key in ALPHA_METRICS},
                        'breakdown': breakdown(clip_mads, pans),
                        'valid_mad_curve': curve if model in (WITH, WITHOUT) and in_table else []})
    print(f"{name}: trained in {record['minutes']:.1f} min; test MAD " + ', '.join(
        f"{result['model']}" + (f" (strength {result['camouflage_strength']:g})" if style == 'camouflage' else '')
        + f" {result['mean']['MAD']:.2f}" for result in results), flush=True)
    return results


def camera_pans(args: argparse.Namespace, style: str, split: str = 'test') -> dict[str, bool]:
    """{clip name: whether the camera pans in it} of the style's `split` clips the tables use."""
    dataset = make_dataset(STYLES[style], split, EVAL_FRAMES, args.resolution, synthetic_clips=args.test_clips)
    return {name: dataset.camera_pans(index) for index, name in enumerate(dataset.clips)}


def breakdown(clip_mads: dict[str, list[float]], pans: dict[str, bool]) -> dict:
    """{clip: MAD of each frame} -> the mean MAD over all frames, over the frames of clips whose camera pans and of
    clips whose camera rests (None where there are none), and by frame index (the mean over clips)."""
    def mean_over(clips):
        values = [mad for clip in clips for mad in clip_mads[clip]]
        return statistics.mean(values) if values else None
    by_frame = [statistics.mean(mads[t] for mads in clip_mads.values() if t < len(mads))
                for t in range(max(len(mads) for mads in clip_mads.values()))]
    return {'MAD': mean_over(clip_mads), 'MAD_pan': mean_over([clip for clip in clip_mads if pans[clip]]),
            'MAD_still': mean_over([clip for clip in clip_mads if not pans[clip]]), 'MAD_by_frame': by_frame}


def fall(by_frame: list[float], empty_by_frame: list[float]) -> float | None:
    """How much the MAD falls from a clip's first frames (EARLY_FRAMES) to its later ones (LATE_FRAMES), measured
    against the empty matte's MAD on the same frames, so that a figure that grows or shrinks over the clips does not
    count: positive when the error falls as frames accumulate; 0 for a model at the empty matte's level."""
    above_empty = [mad - empty for mad, empty in zip(by_frame, empty_by_frame)]
    early = [above_empty[t] for t in EARLY_FRAMES if t < len(above_empty)]
    late = [above_empty[t] for t in LATE_FRAMES if t < len(above_empty)]
    return statistics.mean(early) - statistics.mean(late) if early and late else None


def add_falls(runs: list[dict], base: dict[str, dict]) -> None:
    """Set the breakdown's 'MAD_fall' of the baselines and of the runs measured at the baselines' strength."""
    for results in base.values():
        empty = results[EMPTY]['MAD_by_frame']
        for result in results.values():
            result['MAD_fall'] = fall(result['MAD_by_frame'], empty)
    for run in runs:
        run['breakdown']['MAD_fall'] = fall(run['breakdown']['MAD_by_frame'], base[run['style']][EMPTY][
            'MAD_by_frame']) if run['in_table'] else None


def measure_baselines(args: argparse.Namespace, style: str) -> dict[str, dict]:
    """The empty matte and the causal median background on the style's test clips (camouflage at the tables'
    strength), with the breakdown of the models; the median's threshold is the best on the valid clips."""
    strength = args.test_strengths[0] if style == 'camouflage' else 1.0

    def clips(split: str, count: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        dataset = make_dataset(STYLES[style], split, EVAL_FRAMES, args.resolution, synthetic_clips=count,
                               camouflage_strength=(strength, strength))
        items = {}
        for index, (clip, _) in enumerate(dataset.index):
            fgr, pha, bgr = dataset[index]
            items[dataset.clips[clip]] = (fgr * pha + bgr * (1 - pha), pha)
        return items

    threshold, valid_mad = baselines.choose_threshold(list(clips('valid', args.valid_clips).values()))
    test, pans = clips('test', args.test_clips), camera_pans(args, style)
    empty = {clip: baselines.frame_mads(baselines.empty_matte(frames), pha) for clip, (frames, pha) in test.items()}
    median = {clip: baselines.frame_mads(baselines.median_background_matte(frames, threshold), pha)
              for clip, (frames, pha) in test.items()}
    return {EMPTY: breakdown(empty, pans),
            MEDIAN: {**breakdown(median, pans), 'threshold': threshold, 'valid_MAD': valid_mad}}


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


def read_record(path: str) -> dict | None:
    """A run's training.json: {'settings': how it is trained, 'minutes': time spent training, and 'started': when
    an attempt to train it that has not been counted yet began}, or None."""
    if not os.path.exists(path):
        return None
    with open(path) as file:
        return json.load(file)


def training_minutes(record: dict | None, checkpoint: str | None) -> float:
    """The minutes of training `record` counts, with those of an attempt it started and did not count (its ablation
    was stopped or killed): from its start to the run's newest checkpoint, `checkpoint`, when that is younger."""
    if record is None:
        return 0.0
    minutes = record['minutes']
    if 'started' in record and checkpoint is not None and os.path.getmtime(checkpoint) > record['started']:
        minutes += (os.path.getmtime(checkpoint) - record['started']) / 60
    return minutes


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
        earlier_output = log.tell()
        status = SCRIPTS.run([sys.executable, os.path.join(REPO, command[0]), *command[1:]], stdout=log,
                             stderr=subprocess.STDOUT, env=environment)
    if status != 0:
        with open(log_path, errors='replace') as log:
            log.seek(earlier_output)
            # Progress bars end their lines with carriage returns; the script's own error line says most.
            lines = [line.strip() for line in log.read().replace('\r', '\n').splitlines() if line.strip()] or ['']
        errors = [line for line in lines if line.startswith('error:')]
        raise UserError(f'{command[0]} failed (exit {status}): {(errors or lines)[-1]}\n'
                        f'its whole output: {log_path}')


def t_interval(values: list[float], confidence: float = 0.95) -> dict:
    """{'mean', 'std', 'low', 'high'} of values: the mean, the sample standard deviation and the two-sided Student
    t-interval of the mean at `confidence` (std, low and high None below two values; all None without values)."""
    if not values:
        return {'mean': None, 'std': None, 'low': None, 'high': None}
    mean = statistics.mean(values)
    if len(values) < 2:
        return {'mean': mean, 'std': None, 'low': None, 'high': None}
    std = statistics.stdev(values)
    half_width = t_critical(len(values) - 1, confidence) * std / math.sqrt(len(values))
    return {'mean': mean, 'std': std, 'low': mean - half_width, 'high': mean + half_width}


def t_critical(df: int, confidence: float = 0.95) -> float:
    """The two-sided critical value of Student's t with df degrees of freedom (df 4 at 95%: 2.776): bisection on
    its upper tail, the density integrated by the trapezoidal rule (accurate to about 1e-4)."""
    scale = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)

    def upper_tail(x: float) -> float:
        grid = np.linspace(0, x, 20_001)
        density = scale * (1 + grid ** 2 / df) ** (-(df + 1) / 2)
        return 0.5 - float((density[1:] + density[:-1]).sum() * (grid[1] - grid[0]) / 2)

    low, high = 0.0, 1000.0
    for _ in range(50):
        middle = (low + high) / 2
        low, high = (middle, high) if upper_tail(middle) > (1 - confidence) / 2 else (low, middle)
    return (low + high) / 2


def summarise(args: argparse.Namespace, styles: list[str], runs: list[dict], base: dict[str, dict]) -> dict:
    """Everything the report holds but the settings: the runs, the baselines, the tables, the paired comparisons
    with their intervals, the dose response and the targets."""
    in_table = [run for run in runs if run['in_table']]
    comparisons = [row for style in styles for row in paired_comparisons(in_table, style, base[style])]
    table = [row for style in styles for row in table_rows(in_table, style)]
    return {'runs': runs, 'baselines': base, 'table': table, 'paired_differences': comparisons,
            'dose_response': dose_response(runs, args.test_strengths) if 'camouflage' in styles else [],
            'targets': targets(in_table, comparisons),
            'empty_matte_MAD': {style: base[style][EMPTY]['MAD'] for style in styles}}


def table_rows(runs: list[dict], style: str) -> list[dict]:
    """One row per model evaluated on the style: each metric's and breakdown value's mean and sample standard
    deviation over the seeds (std None for a single seed)."""
    rows = []
    for model in MODELS:
        seeds = [run for run in runs if run['style'] == style and run['model'] == model]
        if not seeds:
            continue
        row = {'style': style, 'model': model, 'seeds': len(seeds)}
        values = {**{metric: [run['mean'][metric] for run in seeds] for metric in ALPHA_METRICS},
                  **{key: [run['breakdown'][key] for run in seeds] for key in ('MAD_pan', 'MAD_still', 'MAD_fall')}}
        for key, column in values.items():
            interval = t_interval([value for value in column if value is not None])
            row[key], row[f'{key}_std'] = interval['mean'], interval['std']
        by_frame = [run['breakdown']['MAD_by_frame'] for run in seeds]
        row['MAD_by_frame'] = [statistics.mean(frame) for frame in zip(*by_frame)]
        rows.append(row)
    return rows


# The paired comparisons: key, what it is, and its value for one seed from that seed's evaluations by model and the
# style's baselines (None where the seed lacks what it needs). Negative differences favour the memory.
COMPARISONS = [
    ('MAD_with_minus_without', 'MAD, w/ minus w/o ConvLSTM',
     lambda runs, base: runs[WITH]['mean']['MAD'] - runs[WITHOUT]['mean']['MAD']),
    ('MAD_with_over_without', 'MAD, w/ over w/o ConvLSTM',
     lambda runs, base: runs[WITH]['mean']['MAD'] / runs[WITHOUT]['mean']['MAD']),
    ('dtSSD_with_minus_without', 'dtSSD, w/ minus w/o ConvLSTM',
     lambda runs, base: runs[WITH]['mean']['dtSSD'] - runs[WITHOUT]['mean']['dtSSD']),
    ('MAD_carried_minus_reset', 'MAD, state carried minus reset every sequence',
     lambda runs, base: runs[WITH]['mean']['MAD'] - runs[RESET]['mean']['MAD']),
    ('MAD_carried_minus_off', 'MAD, state carried minus memory off at test',
     lambda runs, base: runs[WITH]['mean']['MAD'] - runs[OFF]['mean']['MAD']),
    ('MAD_still_with_minus_median', 'MAD on still clips, w/ ConvLSTM minus the causal median background',
     lambda runs, base: runs[WITH]['breakdown']['MAD_still'] - base[MEDIAN]['MAD_still']),
    ('MAD_pan_with_minus_empty', 'MAD on panning clips, w/ ConvLSTM minus the empty matte',
     lambda runs, base: runs[WITH]['breakdown']['MAD_pan'] - base[EMPTY]['MAD_pan']),
    ('MAD_fall_with', 'fall of MAD from the first frames to the later ones, w/ ConvLSTM',
     lambda runs, base: runs[WITH]['breakdown']['MAD_fall']),
    ('MAD_fall_without', 'fall of MAD from the first frames to the later ones, w/o ConvLSTM',
     lambda runs, base: runs[WITHOUT]['breakdown']['MAD_fall']),
    ('MAD_fall_with_minus_without', 'fall of MAD, w/ minus w/o ConvLSTM',
     lambda runs, base: runs[WITH]['breakdown']['MAD_fall'] - runs[WITHOUT]['breakdown']['MAD_fall']),
]


def paired_comparisons(runs: list[dict], style: str, base: dict[str, dict]) -> list[dict]:
    """Per comparison of COMPARISONS the style allows: its value for each seed, their mean, standard deviation and
    95% t-interval over the seeds."""
    by_seed = {}
    for run in runs:
        if run['style'] == style:
            by_seed.setdefault(run['seed'], {})[run['model']] = run
    rows = []
    for key, description, value_of in COMPARISONS:
        per_seed = {}
        for seed in sorted(by_seed):
            try:
                per_seed[seed] = value_of(by_seed[seed], base)
            except (KeyError, TypeError):  # a model this style does not train, or no clip of that kind
                continue
        if per_seed:
            rows.append({'style': style, 'comparison': key, 'description': description, 'seeds': list(per_seed),
                         'per_seed': per_seed, **t_interval(list(per_seed.values()))})
    return rows


def dose_response(runs: list[dict], strengths: list[float]) -> list[dict]:
    """Per camouflage test strength: the MAD of w/ and w/o ConvLSTM (state carried), mean and standard deviation over
    seeds, and their paired per-seed difference and ratio with 95% t-intervals."""
    rows = []
    for strength in strengths:
        mad = {(run['model'], run['seed']): run['mean']['MAD'] for run in runs
               if run['style'] == 'camouflage' and run['camouflage_strength'] == strength}
        seeds = sorted({seed for model, seed in mad if (WITH, seed) in mad and (WITHOUT, seed) in mad})
        row = {'strength': strength, 'seeds': seeds}
        for key, values in (('with', [mad[WITH, seed] for seed in seeds]),
                            ('without', [mad[WITHOUT, seed] for seed in seeds])):
            interval = t_interval(values)
            row[key], row[f'{key}_std'] = interval['mean'], interval['std']
        row['with_minus_without'] = t_interval([mad[WITH, seed] - mad[WITHOUT, seed] for seed in seeds])
        row['with_over_without'] = t_interval([mad[WITH, seed] / mad[WITHOUT, seed] for seed in seeds])
        rows.append(row)
    return rows


def targets(runs: list[dict], comparisons: list[dict]) -> list[dict]:
    """The project's targets on the test split, each with what measures it (a row of per-seed values with their
    mean and 95% t-interval) and whether its interval says it is met (never on fewer than two seeds)."""
    comparison = {(row['style'], row['comparison']): row for row in comparisons}
    plain = {run['seed']: run['mean']['MAD'] for run in runs if run['style'] == 'plain' and run['model'] == WITH}
    results = []

    def add(target: str, row: dict | None, met) -> None:
        if row is not None:
            results.append({'target': target, 'measured': row, 'met': bool(row['low'] is not None and met(row))})

    ratio = comparison.get(('camouflage', 'MAD_with_over_without'))
    add('camouflage: w/ ConvLSTM MAD <= 0.7 x w/o, the 95% interval of the ratio below 0.8, every seed below 0.85',
        ratio, lambda row: row['mean'] <= 0.7 and row['high'] < 0.8 and max(row['per_seed'].values()) < 0.85)
    add('camouflage: w/ ConvLSTM beats the causal median background on still clips',
        comparison.get(('camouflage', 'MAD_still_with_minus_median')), lambda row: row['high'] < 0)
    add('camouflage: w/ ConvLSTM beats the empty matte on panning clips',
        comparison.get(('camouflage', 'MAD_pan_with_minus_empty')), lambda row: row['high'] < 0)
    add('camouflage: the state carried beats the memory off at test',
        comparison.get(('camouflage', 'MAD_carried_minus_off')), lambda row: row['high'] < 0)
    add('camouflage: MAD falls over the first frames for w/ ConvLSTM',
        comparison.get(('camouflage', 'MAD_fall_with')), lambda row: row['low'] > 0)
    add('camouflage: ... and falls more than for w/o ConvLSTM',
        comparison.get(('camouflage', 'MAD_fall_with_minus_without')), lambda row: row['low'] > 0)
    if plain:
        add('plain: w/ ConvLSTM MAD <= 30', {'per_seed': plain, **t_interval(list(plain.values()))},
            lambda row: row['high'] <= 30)
    return results


def markdown_tables(report: dict) -> str:
    """The report's tables in Markdown: metrics, MAD breakdown with the baselines, MAD by frame, paired comparisons,
    dose response and targets."""
    table, base = report['table'], report['baselines']
    lines = ['| style | model | seeds | ' + ' | '.join(ALPHA_METRICS) + ' |',
             '| --- | --- | --- |' + ' --- |' * len(ALPHA_METRICS)]
    for row in table:
        cells = [format_cell(row[metric], row[f'{metric}_std']) for metric in ALPHA_METRICS]
        lines.append(f"| {row['style']} | {row['model']} | {row['seeds']} | " + ' | '.join(cells) + ' |')
    lines += ['', 'MAD by kind of clip and by frame, with the baselines that learn nothing (the median background\'s '
              'threshold chosen on the valid clips); fall: MAD minus the empty matte\'s, of frames '
              f'{EARLY_FRAMES.start}-{EARLY_FRAMES.stop - 1} minus frames {LATE_FRAMES.start}-{LATE_FRAMES.stop - 1} '
              '(positive: the error falls as frames accumulate):', '',
              '| style | model | seeds | all clips | panning clips | still clips | fall |', '| --- | --- | --- |'
              + ' --- |' * 4]
    for row in table:
        cells = [format_cell(row[key], row[f'{key}_std']) for key in ('MAD', 'MAD_pan', 'MAD_still', 'MAD_fall')]
        lines.append(f"| {row['style']} | {row['model']} | {row['seeds']} | " + ' | '.join(cells) + ' |')
    for style, results in base.items():
        for name, result in results.items():
            label = f"{name} (threshold {result['threshold']:g})" if 'threshold' in result else name
            cells = [format_cell(result[key], None) for key in ('MAD', 'MAD_pan', 'MAD_still', 'MAD_fall')]
            lines.append(f'| {style} | {label} | - | ' + ' | '.join(cells) + ' |')
    lines += ['', 'Paired by seed (negative differences and ratios below 1 favour the memory); the interval is the '
              '95% t-interval of the mean over seeds:', '',
              '| style | comparison | seeds | mean | 95% interval | per seed |',
              '| --- | --- | --- | --- | --- | --- |']
    for row in report['paired_differences']:
        lines.append(f"| {row['style']} | {row['description']} | {len(row['seeds'])} | {row['mean']:.2f} | "
                     f"{format_interval(row)} | {format_per_seed(row)} |")
    if report['dose_response']:
        lines += ['', 'Camouflage MAD against camouflage strength (1: nothing of the figures\' plain appearance '
                  'left; 0: plain figures, one still decoy among them):', '',
                  '| strength | seeds | w/ ConvLSTM | w/o ConvLSTM | w/ minus w/o | 95% interval | w/ over w/o | '
                  '95% interval |', '| --- | --- | --- | --- | --- | --- | --- | --- |']
        for row in report['dose_response']:
            difference, ratio = row['with_minus_without'], row['with_over_without']
            lines.append(f"| {row['strength']:g} | {len(row['seeds'])} | "
                         f"{format_cell(row['with'], row['with_std'])} | "
                         f"{format_cell(row['without'], row['without_std'])} | "
                         f"{format_cell(difference['mean'], None)} | {format_interval(difference)} | "
                         f"{format_cell(ratio['mean'], None)} | {format_interval(ratio)} |")
    lines += ['', 'Targets (met only where the 95% interval over seeds says so):', '',
              '| target | mean | 95% interval | per seed | met |', '| --- | --- | --- | --- | --- |']
    for target in report['targets']:
        row = target['measured']
        lines.append(f"| {target['target']} | {row['mean']:.2f} | {format_interval(row)} | {format_per_seed(row)} | "
                     f"{'met' if target['met'] else 'not met'} |")
    return '\n'.join(lines)


def summary_table(report: dict) -> str:
    """The README's short table: MAD of the models and baselines on plain and on camouflage at the tables' strength,
    over all clips and split by camera motion, and the camouflage ratio w/ over w/o with its interval."""
    columns = [('plain', 'MAD'), ('camouflage', 'MAD'), ('camouflage', 'MAD_still'), ('camouflage', 'MAD_pan')]
    lines = ['| MAD (test split) | plain | camouflage | camouflage, still camera | camouflage, panning camera |',
             '| --- | --- | --- | --- | --- |']
    rows = {(row['style'], row['model']): row for row in report['table']}
    for model in (WITH, OFF, WITHOUT):
        cells = [format_cell(rows[style, model][key], rows[style, model][f'{key}_std'])
                 if (style, model) in rows else '-' for style, key in columns]
        lines.append(f'| {model} | ' + ' | '.join(cells) + ' |')
    for name in (MEDIAN, EMPTY):
        cells = [format_cell(report['baselines'][style][name][key], None) if style in report['baselines'] else '-'
                 for style, key in columns]
        lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
    ratio = [row for row in report['paired_differences']
             if (row['style'], row['comparison']) == ('camouflage', 'MAD_with_over_without')]
    if ratio:
        lines += ['', f"Camouflage MAD, w/ over w/o ConvLSTM, paired by seed: {ratio[0]['mean']:.2f}, 95% interval "
                      f"{format_interval(ratio[0])} ({format_per_seed(ratio[0])})."]
    return '\n'.join(lines)


def format_cell(mean: float | None, std: float | None) -> str:
    """'1.23 ± 0.45', '1.23' without a spread, '-' where the value is undefined (dtSSD of single-frame clips, a
    kind of clip the split lacks)."""
    if mean is None:
        return '-'
    return f'{mean:.2f}' + (f' ± {std:.2f}' if std is not None else '')


def format_interval(row: dict) -> str:
    return '-' if row['low'] is None else f"[{row['low']:.2f}, {row['high']:.2f}]"


def format_per_seed(row: dict) -> str:
    return ', '.join(f'{seed}: {value:.2f}' for seed, value in row['per_seed'].items())


def write_report(args: argparse.Namespace, report: dict, minutes: float) -> None:
    os.makedirs(args.report_dir, exist_ok=True)
    base = os.path.join(args.report_dir, args.name)
    settings = {**vars(args), 'device_name': device_name(args.device), 'torch': torch.__version__,
                'minutes': round(minutes, 1),
                'command': ' '.join(['python', 'scripts/ablation.py', *sys.argv[1:]])}
    with atomic_write(base + '.json', 'w') as file:
        json.dump({'settings': settings, **report}, file, indent=2)
    with atomic_write(base + '.csv', 'w', newline='') as file:
        fields = [key for key in report['table'][0] if key != 'MAD_by_frame']
        writer = csv.DictWriter(file, fieldnames=fields, extrasaction='ignore')
        writer.writeheader()
        writer.writerows(report['table'])
    training = sum(run['train_minutes'] for run in report['runs'] if run['model'] in (WITH, WITHOUT)
                   and run['in_table'])
    precision = 'bf16' if args.amp and args.device == 'cpu' else 'fp16' if args.amp else 'fp32'
    start = 'random weights' if args.camouflage_from_scratch or 'plain' not in args.styles else \
        "the seed's plain w/ ConvLSTM checkpoint (both models)"
    summary = (f"Made by `{settings['command']}` ({args.model_backbone} from random weights, "
               f"{args.resolution}x{args.resolution}, batch {args.batch_size}, sequences of {args.seq_length} frames "
               f"(windows of {EVAL_FRAMES}-frame clips), {args.steps} steps per plain run and "
               f"{args.camouflage_steps} per camouflage run from {start} (warm-up {args.warmup_steps}, cosine decay "
               f"from {args.lr:g}), alpha loss {args.pha_loss}, camouflage training strength "
               f"{args.camouflage_strength[0]:g} to {args.camouflage_strength[1]:g}, {precision}, {args.jobs} at "
               f"once, on {settings['device_name']}, torch {torch.__version__}; training took {training:.0f} minutes "
               f"summed over the runs; this invocation of the script took {minutes:.1f} minutes). Metrics on each "
               f"style's synthetic test split ({args.test_clips} of its clips, {EVAL_FRAMES} frames each, never used "
               f"for training or choices) at the published scales (MAD and MSE x1e3, Grad and Conn /1e3, dtSSD "
               f"x1e2), camouflage at strength {args.test_strengths[0]:g}; ± is the standard deviation over seeds."
               f"\n\n" + markdown_tables(report) + '\n')
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
