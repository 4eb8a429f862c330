"""What a user did in the tree since the last build (commits, uncommitted changes,
an operation in progress), so that no tool destroys it."""

from dataclasses import dataclass, field
from typing import List, Optional

from tools import git
from tools.git import describe, git_out, is_ancestor, rev
from tools.tree.base import State


@dataclass
class Findings:
    """User work found in a tree: what a rebuild would discard."""

    operation: Optional[str] = None
    dirty: List[str] = field(default_factory=list)
    foreign: List[str] = field(default_factory=list)  # "sha subject (refs)"
    foreign_refs: List[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.operation or self.dirty or self.foreign)

    def lines(self) -> List[str]:
        out = []
        if self.operation:
            out.append(f"  a {self.operation} is in progress")
        if self.dirty:
            out.append(f"  {len(self.dirty)} uncommitted change(s):")
            out += [f"    {line}" for line in self.dirty[:50]]
            if len(self.dirty) > 50:
                out.append(f"    ... and {len(self.dirty) - 50} more")
        if self.foreign:
            out.append(f"  {len(self.foreign)} commit(s) not made by the tools:")
            out += [f"    {line}" for line in self.foreign[:50]]
            if len(self.foreign) > 50:
                out.append(f"    ... and {len(self.foreign) - 50} more")
        return out


def inspect_tree(repo: git.Repo, state: State) -> Findings:
    found = Findings()
    found.operation = git.operation_in_progress(repo)
    found.dirty = git.uncommitted(repo)
    saved = [s for s in [state.tip, *state.known] if s and rev(repo, s)]
    refs_out = git_out(repo, "for-each-ref", "--format=%(refname)")
    refs = refs_out.split() if refs_out else []
    heads = [r for r in refs] + (["HEAD"] if rev(repo, "HEAD") else [])
    if heads:
        not_args = [f"^{s}" for s in saved]
        out = git_out(repo, "rev-list", *heads, *not_args)
        for sha in out.split() if out else []:
            holders = [r.split("/", 2)[-1] for r in refs if is_ancestor(repo, sha, r)]
            where = f" (on {', '.join(holders)})" if holders else " (detached HEAD)"
            found.foreign.append(describe(repo, sha) + where)
            found.foreign_refs.extend(h for h in refs if is_ancestor(repo, sha, h))
    found.foreign_refs = sorted(set(found.foreign_refs))
    return found
