"""README.md against the code: its Python blocks run and print what README shows, every flag it names exists in the
parser of the script it belongs to, and every function it names exists with the arguments it is shown with."""
import argparse
import contextlib
import importlib
import importlib.util
import inspect
import io
import os
import re
import shlex
import sys

import pytest

from script_runner import REPO

with open(os.path.join(REPO, 'README.md')) as readme_file:
    README = readme_file.read()

# (language, text) of each fenced block, in order.
BLOCKS = re.findall(r'^```(\w*)\n(.*?)^```', README, flags=re.S | re.M)

# Flags of other programs that README shows (pip, TensorBoard, torchrun).
OTHER_PROGRAMS_FLAGS = {'--index-url', '--logdir', '--nproc_per_node', '--nnodes', '--node_rank', '--master_addr'}


def parser_of(script: str) -> argparse.ArgumentParser:
    """The module-level `parser` of a script of the repository, e.g. 'train.py' or 'scripts/export.py'."""
    path = os.path.join(REPO, script)
    if os.path.dirname(path) not in sys.path:
        sys.path.insert(0, os.path.dirname(path))
    spec = importlib.util.spec_from_file_location('readme_' + re.sub(r'\W', '_', script), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.parser


SCRIPTS = ['train.py', 'validate.py', 'inference.py', 'scripts/ablation.py', 'scripts/export.py',
           'scripts/extract_frames.py', 'dataset/synthetic.py',
           *sorted(os.path.join('benchmarks', name) for name in os.listdir(os.path.join(REPO, 'benchmarks'))
                   if name.endswith('.py') and name != 'common.py')]


@pytest.fixture(scope='module')
def parsers() -> dict[str, argparse.ArgumentParser]:
    return {script: parser_of(script) for script in SCRIPTS}


def test_python_blocks_run_and_print_what_readme_shows(capsys):
    namespace = {}
    python_blocks = [(index, text) for index, (language, text) in enumerate(BLOCKS) if language == 'python']
    assert len(python_blocks) >= 2
    for index, text in python_blocks:
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(text, f'README.md python block {index}', 'exec'), namespace)
        if index + 1 < len(BLOCKS) and BLOCKS[index + 1][0] == 'text':
            assert printed.getvalue().strip() == BLOCKS[index + 1][1].strip(), text


def commands() -> list[list[str]]:
    """Every command of README's shell blocks, as words, with `$(...)` substitutions taken as commands of their own
    and backslash-continued lines joined."""
    found = []
    for language, text in BLOCKS:
        if language != 'shell':
            continue
        text = text.replace('\\\n', ' ')
        text = re.sub(r'<[^>]*>', 'PLACEHOLDER', text)
        substitutions = re.findall(r'\$\(([^)]*)\)', text)
        text = re.sub(r'"?\$\([^)]*\)"?', 'SUBSTITUTED', text)
        for line in [*text.splitlines(), *substitutions]:
            for command in re.split(r'&&|\|', line):
                if command.strip():
                    found.append(shlex.split(command))
    return found


def script_of(words: list[str]) -> tuple[str | None, list[str]]:
    """The repository script a command runs ('train.py', 'dataset/synthetic.py'...) and its arguments; None for
    other programs."""
    if words[:2] == ['python', '-m'] and words[2] != 'pytest':
        return words[2].replace('.', '/') + '.py', words[3:]
    if words[0] == 'python' and words[1].endswith('.py'):
        return words[1], words[2:]
    if words[0] == 'torchrun':
        script = next(word for word in words if word.endswith('.py'))
        return script, words[words.index(script) + 1:]
    return None, []


def test_every_command_flag_exists_in_its_script(parsers):
    checked = 0
    for words in commands():
        script, arguments = script_of(words)
        if script is None or script == 'SUBSTITUTED':
            continue
        assert script in parsers, f'README runs {script}, which is not among the scripts this test knows'
        options = parsers[script]._option_string_actions
        for word in arguments:
            if word.startswith('--'):
                assert word.split('=')[0] in options, f'README: {shlex.join(words)}: {script} has no {word}'
                checked += 1
    assert checked > 50


def test_every_flag_readme_names_exists_somewhere(parsers):
    known = set(OTHER_PROGRAMS_FLAGS)
    for parser in parsers.values():
        known.update(parser._option_string_actions)
    for flag in set(re.findall(r'(?<![\w-])--[a-z][a-z0-9_-]*', README)):
        if flag.endswith('-'):  # a family, as in `--refine-*`
            assert any(option.startswith(flag) for option in known), flag
        else:
            assert flag in known, f'README names {flag}, which no script has'


def test_every_function_readme_names_exists_with_those_arguments():
    calls = re.findall(r'`((?:[a-z_]+\.)+[A-Za-z_]+)\(([^`]*)\)`', README)
    assert ('model.utils.copy_matching_tensors', 'model, state_dict') in calls
    for dotted, arguments in calls:
        module_name, name = dotted.rsplit('.', 1)
        function = getattr(importlib.import_module(module_name), name, None)
        assert function is not None, f'README names {dotted}, which does not exist'
        names = [argument.split('=')[0].strip() for argument in arguments.split(',') if argument.strip()]
        inspect.signature(function).bind(*names)
