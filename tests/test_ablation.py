"""scripts/ablation.py: the runs it trains and validates, the tables it writes, resuming, stop signals, and its
errors."""
import contextlib
import csv
import importlib.util
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time

import pytest

from baselines import THRESHOLDS
from errors import UserError
from script_runner import REPO, ablation_args, run_script

pytestmark = pytest.mark.slow  # every test here runs the scripts as subprocesses

WITH, RESET, OFF, WITHOUT = ('w/ ConvLSTM', 'w/ ConvLSTM, state reset every sequence',
                             'w/ ConvLSTM, memory off at test', 'w/o ConvLSTM')
MODELS = {'plain': [WITH, RESET, OFF], 'camouflage': [WITH, RESET, OFF, WITHOUT]}
STYLES = ['plain', 'camouflage']


def load(path: str) -> dict:
    with open(path) as file:
        return json.load(file)


def test_every_style_model_and_seed_is_trained_and_validated(tiny_ablation):
    report = load(tiny_ablation)
    # The tables' evaluations, and the camouflage models again at strength 0 (the state carried, no reset).
    assert sorted((run['style'], run['model'], run['seed'], run['camouflage_strength']) for run in report['runs']) == \
        sorted([(style, model, seed, 1.0 if style == 'camouflage' else None)
                for style in STYLES for model in MODELS[style] for seed in (0, 1)] +
               [('camouflage', model, seed, 0.0) for model in (WITH, WITHOUT) for seed in (0, 1)])
    for run in report['runs']:
        assert run['in_table'] == (run['camouflage_strength'] in (None, 1.0))
        validated = load(run['metrics'])
        assert {key: validated['mean'][key] for key in run['mean']} == run['mean']
        assert validated['settings']['without_convlstm'] == (run['model'] == WITHOUT)
        assert validated['settings']['reset_state_every'] == {RESET: 3, OFF: 1}.get(run['model'], 0)
        assert validated['settings']['model_checkpoint'] == run['checkpoint']
        assert validated['settings']['split'] == 'test', 'the tables are measured on the held-out test split'
        assert os.listdir(os.path.dirname(run['checkpoint'])) == [os.path.basename(run['checkpoint'])]
        strength = run['camouflage_strength']
        assert validated['settings']['camouflage_strength'] == (1.0 if strength is None else strength)
        steps = 3 if run['style'] == 'camouflage' else 2
        assert run['checkpoint'].endswith(f'-iter-{steps}.pth') and run['train_minutes'] > 0
        frames = {clip: [row['MAD'] for row in result['frames']] for clip, result in validated['clips'].items()}
        assert run['breakdown']['MAD'] == pytest.approx(statistics.mean(sum(frames.values(), [])))
        assert len(run['breakdown']['MAD_by_frame']) == 40
    # The reset and memory-off evaluations reuse the w/ ConvLSTM checkpoint; plain trains w/ only, camouflage both.
    checkpoints = {(run['style'], run['model'], run['seed']): run['checkpoint'] for run in report['runs']
                   if run['in_table']}
    assert checkpoints['plain', WITH, 0] == checkpoints['plain', RESET, 0] == checkpoints['plain', OFF, 0]
    assert len(set(checkpoints.values())) == 2 * 3


def test_both_camouflage_models_start_from_the_seeds_plain_checkpoint(tiny_ablation):
    runs = load(tiny_ablation)['runs']
    plain = {run['seed']: run['checkpoint'] for run in runs if run['style'] == 'plain'}
    for run in runs:
        assert run['initialised_from'] == (plain[run['seed']] if run['style'] == 'camouflage' else None)
    log = os.path.join(os.path.dirname(runs[0]['metrics']).replace('plain', 'camouflage'), 'train.log')
    with open(log) as file:
        assert 'Loaded 368/368 tensors' in file.read()  # all of MobileNetV2's, from the plain checkpoint


def test_table_is_the_mean_and_spread_over_seeds(tiny_ablation):
    report = load(tiny_ablation)
    assert [(row['style'], row['model'], row['seeds']) for row in report['table']] == [
        (style, model, 2) for style in STYLES for model in MODELS[style]]
    for row in report['table']:
        runs = [run for run in report['runs']
                if (run['style'], run['model']) == (row['style'], row['model']) and run['in_table']]
        for metric in ('MAD', 'MSE', 'Grad', 'Conn', 'dtSSD'):
            values = [run['mean'][metric] for run in runs]
            assert row[metric] == pytest.approx(statistics.mean(values))
            assert row[f'{metric}_std'] == pytest.approx(statistics.stdev(values))
        assert row['MAD_fall'] == pytest.approx(statistics.mean(run['breakdown']['MAD_fall'] for run in runs))

    with open(tiny_ablation.replace('.json', '.csv'), newline='') as file:
        rows = list(csv.DictReader(file))
    assert [(row['style'], row['model'], float(row['MAD']), float(row['dtSSD_std'])) for row in rows] == [
        (row['style'], row['model'], pytest.approx(row['MAD']), pytest.approx(row['dtSSD_std']))
        for row in report['table']]

    with open(tiny_ablation.replace('.json', '.md')) as file:
        markdown = file.read()
    mad = {row['model']: row['MAD'] for row in report['table'] if row['style'] == 'camouflage'}
    assert f"| camouflage | w/o ConvLSTM | 2 | {mad[WITHOUT]:.2f} ± " in markdown


def test_learning_curves_are_logged_during_training(tiny_ablation):
    for run in load(tiny_ablation)['runs']:
        if run['model'] in (RESET, OFF) or not run['in_table']:
            assert run['valid_mad_curve'] == [], 'the curve belongs to the run, given once'
            continue
        curve = run['valid_mad_curve']
        assert curve and all(step > 0 and mad > 0 for step, mad in curve), (run['style'], run['model'], curve)
        assert [step for step, _ in curve] == sorted({step for step, _ in curve})


def test_paired_comparisons_pair_the_same_seeds_models(tiny_ablation):
    report = load(tiny_ablation)
    mad = {(run['style'], run['model'], run['seed']): run['mean']['MAD'] for run in report['runs'] if run['in_table']}
    rows = {(row['style'], row['comparison']): row for row in report['paired_differences']}
    assert ('plain', 'MAD_with_minus_without') not in rows, 'plain trains no w/o model'
    for style in STYLES:
        for seed in (0, 1):
            assert rows[style, 'MAD_carried_minus_reset']['per_seed'][str(seed)] == pytest.approx(
                mad[style, WITH, seed] - mad[style, RESET, seed])
            assert rows[style, 'MAD_carried_minus_off']['per_seed'][str(seed)] == pytest.approx(
                mad[style, WITH, seed] - mad[style, OFF, seed])
    ratio = rows['camouflage', 'MAD_with_over_without']
    assert ratio['per_seed'] == {
        str(seed): pytest.approx(mad['camouflage', WITH, seed] / mad['camouflage', WITHOUT, seed]) for seed in (0, 1)}
    assert ratio['mean'] == pytest.approx(statistics.mean(ratio['per_seed'].values()))
    assert ratio['low'] < ratio['mean'] < ratio['high']
    with open(tiny_ablation.replace('.json', '.md')) as file:
        markdown = file.read()
    assert f"| camouflage | MAD, w/ over w/o ConvLSTM | 2 | {ratio['mean']:.2f} | [{ratio['low']:.2f}, " in markdown


def test_baselines_and_targets(tiny_ablation):
    report = load(tiny_ablation)
    assert sorted(report['baselines']) == sorted(STYLES)
    for style, results in report['baselines'].items():
        empty, median = results['empty matte (alpha 0)'], results['causal median background']
        assert empty['MAD'] == report['empty_matte_MAD'][style] > 0
        assert median['threshold'] in THRESHOLDS and median['MAD'] > 0 and len(median['MAD_by_frame']) == 40
        assert empty['MAD_fall'] == 0
    with open(tiny_ablation.replace('.json', '.md')) as file:
        markdown = file.read()
    for style in STYLES:
        assert f"| {style} | empty matte (alpha 0) | - | {report['empty_matte_MAD'][style]:.2f} |" in markdown
    targets = {target['target']: target for target in report['targets']}
    assert len(targets) >= 6 and all(isinstance(target['met'], bool) for target in targets.values())
    plain = targets['plain: w/ ConvLSTM MAD <= 30']
    plain_runs = [run for run in report['runs'] if run['style'] == 'plain' and run['model'] == WITH]
    assert plain['measured']['mean'] == pytest.approx(statistics.mean(run['mean']['MAD'] for run in plain_runs))
    assert plain['met'] == (plain['measured']['high'] <= 30)


def test_rerun_keeps_finished_training_and_fills_the_report(tiny_ablation):
    out = os.path.dirname(os.path.dirname(tiny_ablation))
    report_page = os.path.join(out, 'report', 'README.md')
    with open(report_page, 'w') as file:
        file.write('# Report\n<!-- ablation table -->\nold numbers\n<!-- end of ablation table -->\nDiscussion.\n')
    before = load(tiny_ablation)['runs']
    modified = {run['checkpoint']: os.path.getmtime(run['checkpoint']) for run in before}
    result = run_script('scripts/ablation.py', *ablation_args(out), timeout=600)  # validates every run again
    assert result.returncode == 0, result.stderr
    after = load(tiny_ablation)['runs']
    assert {run['checkpoint']: os.path.getmtime(run['checkpoint']) for run in after} == modified
    assert [run['train_minutes'] for run in after] == [run['train_minutes'] for run in before]
    with open(report_page) as file:
        page = file.read()
    with open(tiny_ablation.replace('.json', '.md')) as file:
        table = file.read()
    assert page == f'# Report\n<!-- ablation table -->\n{table}<!-- end of ablation table -->\nDiscussion.\n'


def test_failing_training_names_its_log(tmp_path):
    not_a_folder = tmp_path / 'file'
    not_a_folder.write_text('')
    args = ablation_args(str(tmp_path), '--styles', 'camouflage', '--seeds', '0')
    args[args.index('--checkpoint-root') + 1] = str(not_a_folder)
    result = run_script('scripts/ablation.py', *args)
    assert result.returncode != 0
    log = tmp_path / 'output' / 'ablation' / 'camouflage-with-convlstm-seed0' / 'train.log'
    assert 'train.py failed' in result.stderr and str(log) in result.stderr
    assert f'{not_a_folder} is a file' in result.stderr, 'the last line of train.py names the cause'
    assert 'is a file' in log.read_text()
    assert not (tmp_path / 'report').exists()


@pytest.mark.parametrize('flags, named', [(['--steps', '0'], '--steps'),
                                          (['--camouflage-strength', '0.8', '0.2'], '--camouflage-strength'),
                                          (['--test-strengths', '1', '1.5'], '--test-strengths'),
                                          (['--valid-clips', '33'], '--valid-clips')])
def test_bad_budget_is_refused(tmp_path, flags, named):
    result = run_script('scripts/ablation.py', *ablation_args(str(tmp_path), *flags))
    assert result.returncode != 0 and named in result.stderr
    assert not os.path.exists(tmp_path / 'report')


def test_dose_response_pairs_the_models_at_each_strength(tiny_ablation):
    report = load(tiny_ablation)
    assert [row['strength'] for row in report['dose_response']] == [1.0, 0.0]
    for row in report['dose_response']:
        mad = {(run['model'], run['seed']): run['mean']['MAD'] for run in report['runs']
               if run['style'] == 'camouflage' and run['camouflage_strength'] == row['strength']}
        assert row['seeds'] == [0, 1]
        assert row['with'] == pytest.approx(statistics.mean(mad[WITH, seed] for seed in (0, 1)))
        assert row['without'] == pytest.approx(statistics.mean(mad[WITHOUT, seed] for seed in (0, 1)))
        assert row['with_minus_without']['mean'] == pytest.approx(row['with'] - row['without'])
    with open(tiny_ablation.replace('.json', '.md')) as file:
        assert f"| 0 | 2 | {report['dose_response'][1]['with']:.2f} ± " in file.read()


def processes_naming(text: str, besides: int) -> list[int]:
    """The ids of the processes (other than `besides`) whose command line holds `text`."""
    found = []
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            with open(f'/proc/{pid}/cmdline', 'rb') as file:
                if text.encode() in file.read() and int(pid) != besides:
                    found.append(int(pid))
        except OSError:  # ended meanwhile
            pass
    return found


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT], ids=['SIGTERM', 'SIGINT'])
def test_a_stop_signal_reaches_the_running_training_and_is_waited_for(tmp_path, signum):
    args = ablation_args(str(tmp_path), '--styles', 'plain', '--seeds', '0', '--steps', '1000')
    ablation = subprocess.Popen([sys.executable, 'scripts/ablation.py', *args], cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    log = tmp_path / 'output' / 'ablation' / 'plain-with-convlstm-seed0' / 'train.log'
    deadline = time.time() + 240
    while not (log.exists() and 'step=' in log.read_text()) and time.time() < deadline:
        time.sleep(0.2)
    try:
        assert len(processes_naming(str(tmp_path), besides=ablation.pid)) == 1, 'train.py, training'
        ablation.send_signal(signum)  # to the ablation alone, as `kill` sends it
        stdout, stderr = ablation.communicate(timeout=120)
    finally:  # where the test fails, end what it started
        if ablation.poll() is None:
            ablation.kill()
        for pid in processes_naming(str(tmp_path), besides=ablation.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert ablation.returncode == 128 + signum
    assert stderr.strip().splitlines() == [
        f'interrupted by {signal.Signals(signum).name}: the running scripts were stopped (train.py saves its steps); '
        f'run the same command again to continue']
    assert processes_naming(str(tmp_path), besides=ablation.pid) == [], 'no script runs on'
    assert 'interrupted: saved' in log.read_text(), 'train.py got the signal and saved its steps'


def test_a_failed_script_is_named_by_its_error_line_of_this_run(tmp_path):
    spec = importlib.util.spec_from_file_location('ablation', os.path.join(REPO, 'scripts', 'ablation.py'))
    ablation = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ablation)
    script, log = tmp_path / 'fails.py', tmp_path / 'train.log'
    script.write_text("import sys\nprint('error: the folder is in use', file=sys.stderr)\n"
                      "sys.stderr.write('epoch 0: 3/9 [00:01, step=31]\\r')\nsys.exit(1)\n")
    log.write_text('error: an earlier attempt failed otherwise\n')
    with pytest.raises(UserError, match=re.escape(f'{script} failed (exit 1): error: the folder is in use\n')):
        ablation.run_script(str(log), None, [str(script)])


def test_training_that_finishes_after_its_ablation_was_killed_is_kept(tmp_path):
    args = ablation_args(str(tmp_path), '--styles', 'plain', '--seeds', '0', '--steps', '12')
    ablation = subprocess.Popen([sys.executable, 'scripts/ablation.py', *args], cwd=REPO, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    log = tmp_path / 'output' / 'ablation' / 'plain-with-convlstm-seed0' / 'train.log'
    deadline = time.time() + 240
    while not (log.exists() and 'step=' in log.read_text()) and time.time() < deadline:
        time.sleep(0.2)
    ablation.kill()  # SIGKILL: nothing can stop its train.py, which trains on to its end
    ablation.wait()
    deadline = time.time() + 600
    while processes_naming(str(tmp_path), besides=ablation.pid) and time.time() < deadline:
        time.sleep(0.2)
    result = run_script('scripts/ablation.py', *args)
    assert result.returncode == 0, result.stderr
    run = load(os.path.join(tmp_path, 'report', 'ablation.json'))['runs'][0]
    assert run['checkpoint'].endswith('epoch-0-iter-12.pth') and run['train_minutes'] > 0
    assert log.read_text().count('Continuing from') == 0, 'the rerun trained nothing'
