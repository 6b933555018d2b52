"""Which code produced a result: the git commit of the source tree and whether it had uncommitted changes.

Results record this when their run *starts* (a checkout edited or committed while a long run goes on must not
relabel what the run computed). Outside a git checkout (an installed wheel, no ``git`` binary) every value is
``None``; nothing here raises.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["RESULT_DIRS", "git_state"]

_PACKAGE_DIR = Path(__file__).resolve().parent

#: Folders (relative to the checkout's root) whose *untracked* files are results, not code: a benchmark grid
#: writes its cells there while it runs, and a second grid started beside it must not be recorded as dirty code.
RESULT_DIRS = ("benchmarks/results/",)


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout


def git_state(path: str | Path | None = None) -> dict[str, Any]:
    """The git state of the checkout holding ``path`` (default: this package's source, i.e. the code running).

    Returns:
        ``commit`` (HEAD's full hash), ``dirty`` (tracked changes, or untracked, not ignored files outside
        :data:`RESULT_DIRS`), ``describe`` (``git describe --always --dirty``), ``changed_files`` (how many
        of the paths ``git status --porcelain`` lists count), ``untracked_results`` (untracked paths under
        :data:`RESULT_DIRS`, which do not) and ``diff_sha256`` (hash of ``git diff HEAD``, to tell two dirty
        states apart; ``None`` when clean). All ``None`` outside a git checkout.
    """
    cwd = Path(path).resolve() if path is not None else _PACKAGE_DIR
    if cwd.is_file():
        cwd = cwd.parent
    state: dict[str, Any] = {"commit": None, "dirty": None, "describe": None, "changed_files": None,
                             "untracked_results": None, "diff_sha256": None}
    if not cwd.is_dir():
        return state
    commit = _git(["rev-parse", "HEAD"], cwd)
    if commit is None:
        return state
    state["commit"] = commit.strip() or None
    top = _git(["rev-parse", "--show-toplevel"], cwd)
    root = Path(top.strip()) if top and top.strip() else cwd  # porcelain paths relative to the root
    status = _git(["status", "--porcelain", "--untracked-files=all"], root)
    if status is not None:
        lines = [line for line in status.splitlines() if line.strip()]
        n_results = sum(line.startswith("?? ") and line[3:].strip('"').startswith(RESULT_DIRS) for line in lines)
        changed = len(lines) - n_results
        state["dirty"] = changed > 0
        state["changed_files"] = changed
        state["untracked_results"] = n_results
        if changed:
            diff = _git(["diff", "HEAD"], cwd)
            if diff is not None:
                state["diff_sha256"] = hashlib.sha256(diff.encode()).hexdigest()
    describe = _git(["describe", "--always", "--dirty"], cwd)
    state["describe"] = describe.strip() if describe else None
    return state
