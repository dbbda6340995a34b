"""Where each dataset lives. Override a path with its environment variable instead of editing this file.

    name                   environment variable         default (relative to this repository)
    videomatte240k         VIDEOMATTE240K_PATH          data/VideoMatte240K
    videomatte8k           VIDEOMATTE8K_PATH            data/VideoMatte8K
    backgrounds            BACKGROUNDS_PATH             data/Backgrounds

A VideoMatte path holds <split>/fgr/<clip>/<frame>.jpg and <split>/pha/<clip>/<frame>.jpg (README's Data
section, as scripts/extract_frames.py writes it); the backgrounds path holds <split>/*.jpg. The built-in
synthetic datasets (SYNTHETIC_STYLES) live nowhere: they are drawn in memory (dataset/synthetic.py).
A relative path in an environment variable is taken from the current directory.
"""
import os

REPO = os.path.dirname(os.path.abspath(__file__))
SYNTHETIC_STYLES = {'synthetic': 'plain', 'synthetic-camouflage': 'camouflage'}  # dataset name -> style


def _path(name: str, default: str) -> str:
    variable = name.upper().replace('-', '_') + '_PATH'
    if variable in os.environ:
        return os.path.abspath(os.path.expanduser(os.environ[variable]))
    return os.path.join(REPO, default)


DATA_PATH = {
    'videomatte240k': _path('videomatte240k', 'data/VideoMatte240K'),
    'videomatte8k': _path('videomatte8k', 'data/VideoMatte8K'),
    'backgrounds': _path('backgrounds', 'data/Backgrounds'),
}
DATASETS = [name for name in DATA_PATH if name != 'backgrounds'] + list(SYNTHETIC_STYLES)


def dataset_paths(dataset_name: str) -> tuple[str, str]:
    """(videomatte_root, backgrounds_root) of a dataset on disk; ValueError naming the known ones if unknown."""
    if dataset_name not in DATA_PATH or dataset_name == 'backgrounds':
        raise ValueError(f'unknown dataset {dataset_name!r}; use one of {", ".join(DATASETS)}')
    return DATA_PATH[dataset_name], DATA_PATH['backgrounds']
