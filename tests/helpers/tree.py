"""What the tree tests share (test_tree_*, test_verify, test_check): the model config
file and the anchor they edit in it, committing in a tree, the subjects of a range,
a module that black and isort accept, and a planted missing comma."""

import textwrap
from pathlib import Path

from tests.helpers.project import git

MODEL_CONFIG = "python/sglang/srt/configs/model_config.py"
ANCHOR = 'multimodal_model_archs = [\n    "CLIPModel",\n'


def commit_in_tree(tree: Path, message: str, author="Alice <alice@example.com>"):
    git(tree, "add", "-A")
    git(tree, "commit", "-q", "--author", author, "-m", message)
    return git(tree, "rev-parse", "HEAD")


def add_arch(tree: Path, arch: str) -> None:
    path = tree / MODEL_CONFIG
    text = path.read_text()
    assert text.count(ANCHOR) == 1
    path.write_text(text.replace(ANCHOR, ANCHOR + f'    "{arch}",\n'))


def subjects(tree: Path, rng: str):
    out = git(tree, "log", "--reverse", "--format=%s", rng)
    return out.splitlines() if out else []


CLEAN_MODULE = textwrap.dedent(
    '''\
    """A probe module that black and isort accept."""

    import os

    import torch

    from sglang.srt.configs.model_config import ModelConfig

    NAMES = ["A", "B"]
    '''
)


def plant_missing_comma(text: str) -> str:
    """Drop the comma after "CLIPModel" in multimodal_model_archs."""
    assert text.count(ANCHOR) == 1
    return text.replace(ANCHOR, ANCHOR.replace('"CLIPModel",', '"CLIPModel"'))
