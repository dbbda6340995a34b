"""Every script's --help: its examples render as written (line breaks and continuation backslashes intact), and each
checkpoint an example or a flag's help names is one that README's recipe writes.

The help is the parser's format_help(), what --help prints, from the scripts imported in this process (a Python with
torch takes ~5 s to start on the 2-core machine).
"""
import ast
import importlib.util
import os
import re
import shlex

import pytest

from dataset.synthetic import TRAIN_CLIPS_PER_EPOCH
from script_runner import REPO

SCRIPTS = ['train.py', 'validate.py', 'inference.py', 'scripts/export.py', 'scripts/extract_frames.py',
           'scripts/ablation.py', 'dataset/synthetic.py']
CHECKPOINT = re.compile(r'checkpoint/[^\s"\'`)]+\.pth')


def rendered_help(script: str) -> str:
    spec = importlib.util.spec_from_file_location(f'help_of_{os.path.basename(script)[:-3]}',
                                                  os.path.join(REPO, script))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.parser.format_help()


def example_lines(script: str) -> list[str]:
    """The lines of the script's docstring, as its source spells them, that show a command: those holding
    'python ' and the continuation lines after one that ends in a backslash."""
    with open(os.path.join(REPO, script)) as file:
        source = file.read()
    docstring = ast.get_source_segment(source, ast.parse(source).body[0].value)
    lines, continued = [], False
    for line in docstring.splitlines():
        if 'python ' in line or continued:
            lines.append(line.rstrip())
        continued = line.rstrip().endswith('\\')
    return lines


def recipe_checkpoints() -> set[str]:
    """The checkpoint each `python train.py` command of README with --max-steps writes last:
    <checkpoint dir>/epoch-E-iter-<max steps>.pth."""
    with open(os.path.join(REPO, 'README.md')) as file:
        readme = file.read()
    written = set()
    for line in readme.splitlines():
        for command in line.split('&&'):
            words = shlex.split(command.rstrip(' \\')) if command.strip().startswith('python train.py ') else []
            if '--max-steps' not in words:
                continue
            flags = dict(zip(words, words[1:]))  # each word and the next: a flag and its value, among others
            steps, batch = int(flags['--max-steps']), int(flags.get('--batch-size', 1))
            assert flags['--dataset-name'].startswith('synthetic') and steps * batch <= TRAIN_CLIPS_PER_EPOCH
            folder = flags.get('--checkpoint-dir', f'checkpoint/{flags["--model-name"]}')
            written.add(f'{folder}/epoch-0-iter-{steps}.pth')
    return written


def test_the_recipe_writes_the_checkpoints_of_its_first_command_and_the_refiner():
    assert recipe_checkpoints() == {'checkpoint/demo/epoch-0-iter-800.pth',
                                    'checkpoint/demo-refine/epoch-0-iter-300.pth'}


@pytest.mark.parametrize('script', SCRIPTS)
def test_examples_render_as_written_with_checkpoints_the_recipe_writes(script):
    text = rendered_help(script)
    shown = [line.rstrip() for line in text.splitlines()]
    examples = example_lines(script)
    assert examples, f'{script} shows no example'
    for line in examples:
        assert line in shown, f'{script} --help does not show this line as written: {line!r}'
    named = set(CHECKPOINT.findall(text))
    assert named <= recipe_checkpoints(), f'{script} --help names checkpoints README never writes: {named}'
