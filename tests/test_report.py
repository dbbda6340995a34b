"""The report and README say what report/ablation.json holds: the generated tables are the script's, and every number
in the report's discussion is one the JSON files hold."""
import importlib.util
import json
import os
import re

from script_runner import REPO

spec = importlib.util.spec_from_file_location('ablation', os.path.join(REPO, 'scripts', 'ablation.py'))
ablation = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ablation)

TARGET_LEVELS = {'0.7', '0.8', '0.85'}  # the targets' own thresholds, which the discussion names


def read(path: str) -> str:
    with open(os.path.join(REPO, path)) as file:
        return file.read()


def numbers_in(value, found: set[str]) -> set[str]:
    """Every number in a JSON value, as the text may write it: with 0 to 3 decimals, and without its sign."""
    if isinstance(value, dict):
        for item in value.values():
            numbers_in(item, found)
    elif isinstance(value, list):
        for item in value:
            numbers_in(item, found)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        for digits in range(4):
            found.add(f'{abs(value):.{digits}f}')
    return found


def between(text: str, begin: str, end: str) -> str:
    return text.split(begin, 1)[1].split(end, 1)[0]


def test_report_tables_are_the_scripts():
    report, tables = read('report/README.md'), read('report/ablation.md')
    assert between(report, '<!-- ablation table -->\n', '<!-- end of ablation table -->') == tables


def test_readme_summary_is_generated_from_the_json():
    summary = ablation.summary_table(json.loads(read('report/ablation.json')))
    assert between(read('README.md'), '<!-- ablation summary -->\n', '<!-- end of ablation summary -->') == \
        summary + '\n'


def test_every_number_of_the_discussion_is_in_the_json():
    allowed = numbers_in(json.loads(read('report/ablation.json')), set())
    allowed |= numbers_in(json.loads(read('report/probes.json')), set()) | TARGET_LEVELS
    discussion = between(read('report/README.md'), '## 8. Discussion and limits', '## 9.')
    stray = [number for number in re.findall(r'(?<![\w.])\d+\.\d+', discussion) if number not in allowed]
    assert not stray, f'numbers in the discussion that report/ablation.json and report/probes.json lack: {stray}'
