"""analysis.ipynb: it runs headless top to bottom on a tiny ablation and writes its tables and figures."""
import json
import os
import sys

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient
from PIL import Image

from script_runner import REPO

pytestmark = pytest.mark.slow  # every test here runs the scripts as subprocesses

NOTEBOOK = os.path.join(REPO, 'analysis.ipynb')
PARAMETERS = {'REPORT_JSON': 'report/ablation.json', 'FIGURE_DIR': 'report/img', 'STYLE': 'camouflage', 'SEED': 0,
              'CLIP': 0, 'FRAMES': 8, 'STATE_CHANNELS': 4, 'DEVICE': 'cpu'}
METRICS = ('MAD', 'MSE', 'Grad', 'Conn', 'dtSSD')


def parameters_cell(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    [cell] = [cell for cell in notebook.cells if 'parameters' in cell.metadata.get('tags', [])]
    return cell


def test_notebook_is_stored_without_outputs_and_with_its_parameters():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == 'code']
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code)
    assert code[0] is parameters_cell(notebook)
    defaults = {}
    exec(code[0].source, defaults)
    assert {name: defaults[name] for name in PARAMETERS} == PARAMETERS


def test_notebook_writes_tables_and_figures(tiny_ablation, tmp_path):
    # jupyter_client starts a kernelspec whose command is plain 'python' with this interpreter (the venv's).
    kernel_command = KernelSpecManager().get_kernel_spec('python3').argv[0]
    assert kernel_command in ('python', 'python3', sys.executable), f'the python3 kernel runs {kernel_command}'
    figures = tmp_path / 'img'
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    parameters = {**PARAMETERS, 'REPORT_JSON': tiny_ablation, 'FIGURE_DIR': str(figures), 'FRAMES': 4,
                  'STATE_CHANNELS': 2}
    parameters_cell(notebook).source = '\n'.join(f'{name} = {value!r}' for name, value in parameters.items())
    NotebookClient(notebook, timeout=300, kernel_name='python3', resources={'metadata': {'path': REPO}}).execute()

    with open(tiny_ablation) as file:
        report = json.load(file)
    table = report['table']
    markdown = (figures / 'ablation_table.md').read_text()
    latex = (figures / 'ablation_table.tex').read_text()
    assert latex.startswith(r'\begin{tabular}') and r'\toprule' in latex and latex.rstrip().endswith(r'\end{tabular}')
    for row in table:
        cells = [f'{row[metric]:.2f}' + f' ± {row[f"{metric}_std"]:.2f}' for metric in METRICS]
        assert f"| {row['style']} | {row['model']} | {row['seeds']} | " + ' | '.join(cells) + ' |' in markdown
        latex_cells = [cell.replace('±', r'$\pm$') for cell in cells]
        assert f"{row['style']} & {row['model']} & {row['seeds']} & " + ' & '.join(latex_cells) + r' \\' in latex

    # The comparisons and the dose response: each value as the notebook formats it, the intervals as [low, high].
    def interval(row):
        return f"[{row['low']:.2f}, {row['high']:.2f}]"

    assert report['paired_differences'] and report['dose_response']
    differences = (figures / 'paired_differences.md').read_text()
    for row in report['paired_differences']:
        per_seed = ', '.join(f'{seed}: {value:.2f}' for seed, value in row['per_seed'].items())
        assert (f"| {row['style']} | {row['description']} | {len(row['seeds'])} | {row['mean']:.2f} | "
                f"{interval(row)} | {per_seed} |") in differences
    dose = (figures / 'dose_response.md').read_text()
    for row in report['dose_response']:
        difference, ratio = row['with_minus_without'], row['with_over_without']
        assert (f"| {row['strength']:g} | 2 | {row['with']:.2f} ± {row['with_std']:.2f} | "
                f"{row['without']:.2f} ± {row['without_std']:.2f} | {difference['mean']:.2f} {interval(difference)} | "
                f"{ratio['mean']:.2f} {interval(ratio)} |") in dose
    # Image rows: the strips show the source, the true alpha, w/ ConvLSTM and its memory off, and on camouflage w/o.
    for name, rows in (('learning_curves.png', 1), ('loss_curves.png', 1), ('mad_by_frame.png', 1),
                       ('frames_strip_plain.png', 4), ('frames_strip_camouflage.png', 5), ('hidden_states.png', 2 + 2)):
        with Image.open(figures / name) as image:
            image.verify()
        with Image.open(figures / name) as image:
            width, height = image.size
        assert image.format == 'PNG' and width >= 400 and height >= 150 * rows, (name, image.size)
