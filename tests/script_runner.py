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
    """train.py flags for a few quick steps of MobileNetV2 on a tiny dataset at `root`, writing into `out`."""
    return ['--dataset-name', 'synthetic', '--videomatte-root', root, '--model-backbone', 'mobilenetv2',
            '--model-name', 'tiny', '--resolution', '64', '--batch-size', '2', '--seq-length', '3',
            '--checkpoint-dir', os.path.join(out, 'checkpoint'), '--log-dir', os.path.join(out, 'log'),
            '--log-train-loss-interval', '1', '--device', 'cpu', *extra]
