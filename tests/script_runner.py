"""Running the repository's top-level scripts from tests, as a user would."""
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(script: str, *args: str, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """Run a top-level script of the repository with this Python, capturing its output."""
    return subprocess.run([sys.executable, os.path.join(REPO, script), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, **kwargs)


def train_args(root: str, out: str, *extra: str) -> list[str]:
    """train.py flags for a few quick steps of MobileNetV2 on a tiny dataset on disk at `root` (as
    dataset.synthetic.generate writes it, read as a VideoMatte dataset), writing into `out`."""
    return ['--dataset-name', 'videomatte240k', '--videomatte-root', root,
            '--backgrounds-root', os.path.join(root, 'backgrounds'), '--model-backbone', 'mobilenetv2',
            '--model-name', 'tiny', '--resolution', '64', '--batch-size', '2', '--seq-length', '3',
            '--checkpoint-dir', os.path.join(out, 'checkpoint'), '--log-dir', os.path.join(out, 'log'),
            '--log-train-loss-interval', '1', '--device', 'cpu', *extra]


def ablation_args(out: str, *extra: str) -> list[str]:
    """scripts/ablation.py flags for a tiny ablation (both styles, 2 seeds, 2 plain and 3 camouflage steps per run
    with 1 warm-up step and 1 validation, 1 valid and 1 test clip per style, camouflage tested at strengths 1 and 0),
    writing into `out`."""
    return ['--seeds', '0', '1', '--steps', '2', '--camouflage-steps', '3', '--test-strengths', '1', '0',
            '--warmup-steps', '1', '--resolution', '32', '--batch-size', '2',
            '--seq-length', '3', '--valid-clips', '1', '--test-clips', '1', '--curve-points', '1', '--jobs', '1',
            '--device', 'cpu', '--checkpoint-root', os.path.join(out, 'checkpoint'),
            '--log-root', os.path.join(out, 'log'), '--output-root', os.path.join(out, 'output'),
            '--report-dir', os.path.join(out, 'report'), *extra]



def signal_when_called(monkeypatch, module, name: str, signum: int) -> None:
    """Make module.name send `signum` to this process, then do its work: a Ctrl-C or SIGTERM arriving mid-run."""
    original = getattr(module, name)

    def interrupted(*args, **kwargs):
        os.kill(os.getpid(), signum)
        return original(*args, **kwargs)
    monkeypatch.setattr(module, name, interrupted)
