"""Build the patched SGLang tree (``make apply``) and write it back (``make export``).

The tree is a git repository (default ``build/sglang``) with this history::

    qsv/base       pristine pinned SGLang (python/sglang/... from the wheel, or the
                   v0.5.17 commit of an SGLANG_SRC checkout)
      one commit per patches/series entry (git am)
      one overlay commit: every file under overlay/ (trailer "Qsv-Overlay: overlay/")
    qsv/upstream   <- the upstream PR is exactly qsv/base..qsv/upstream
      one commit per patches/cpu/series entry (git am): CPU enablement, not upstream
    qsv/cpu        <- HEAD, the tree the tests and the CPU runtime use

A state file (``.git/qsv-state.json``) records a hash of every input and the shas the
build produced, which makes ``apply`` idempotent and lets it recognise user work.  See
docs/design.md for the rules.

The modules: ``paths`` (locations and names), ``inputs`` (the series, the overlay, a
release's variants), ``base`` (the state file and the pristine base), ``safety`` (the
user's work in the tree), ``apply`` and ``export``. The names other tools use are
imported here.
"""

from tools.tree.apply import apply
from tools.tree.base import State, input_hash
from tools.tree.export import export
from tools.tree.inputs import overlay_files, read_manifest, read_series, release_inputs
from tools.tree.paths import BASE_TAG, CPU_BRANCH, UPSTREAM_BRANCH, Paths
from tools.tree.safety import inspect_tree

__all__ = [
    "BASE_TAG",
    "CPU_BRANCH",
    "Paths",
    "State",
    "UPSTREAM_BRANCH",
    "apply",
    "export",
    "input_hash",
    "inspect_tree",
    "overlay_files",
    "read_manifest",
    "read_series",
    "release_inputs",
]
