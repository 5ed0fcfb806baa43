"""Lines per module and the longest functions of `mmtune/`, at two git revisions (issue 13's figures).

    python3 scripts/code_stats.py 26ce9e5 HEAD

Lines are physical lines; a function's length runs from its `def` to its last line (ast).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def stats(rev: str) -> tuple[dict[str, int], list[tuple[int, str]]]:
    """{module: lines} and [(lines, module:function)] longest first, of mmtune/ at `rev`."""
    names = subprocess.run(["git", "ls-tree", "-r", "--name-only", rev, "mmtune"], cwd=REPO, check=True,
                           capture_output=True, text=True).stdout.split()
    lines: dict[str, int] = {}
    funcs: list[tuple[int, str]] = []
    for name in (n for n in names if n.endswith(".py")):
        src = subprocess.run(["git", "show", f"{rev}:{name}"], cwd=REPO, check=True, capture_output=True,
                             text=True).stdout
        rel = name.removeprefix("mmtune/")
        lines[rel] = len(src.splitlines())
        funcs += [(n.end_lineno - n.lineno + 1, f"{rel}:{n.name}") for n in ast.walk(ast.parse(src))
                  if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno]
    return lines, sorted(funcs, reverse=True)


def main() -> int:
    if len(sys.argv) != 3:
        print("usage: scripts/code_stats.py REV_BEFORE REV_AFTER (git revisions, e.g. 26ce9e5 HEAD)", file=sys.stderr)
        return 2
    try:
        (b, bf), (a, af) = stats(sys.argv[1]), stats(sys.argv[2])
    except subprocess.CalledProcessError as e:
        print(f"code_stats.py: git could not read a revision ({e.stderr.strip()}); pass two commits of this repo",
              file=sys.stderr)
        return 2
    print(f"total lines {sum(b.values())} -> {sum(a.values())}, files {len(b)} -> {len(a)}")
    for k in sorted(set(b) | set(a)):
        if b.get(k) != a.get(k):
            print(f"  {k:40s} {b.get(k, '-'):>5} -> {a.get(k, '-')}")
    for label, funcs in (("before", bf), ("after", af)):
        print(f"longest functions {label}: " + ", ".join(f"{name} {n}" for n, name in funcs[:5]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
