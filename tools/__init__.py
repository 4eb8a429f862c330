"""Project tooling: build the patched SGLang tree, export the series, verify it.

Run as ``python -m tools <command>``; see ``python -m tools --help`` and docs/design.md.
This package must stay importable without third-party packages: ``tools.venv`` runs
under the system interpreter before ``.venv`` exists.
"""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class ToolError(Exception):
    """A failure with a message meant for the user.

    ``python -m tools`` prints it without a traceback and exits with status 2.
    """
