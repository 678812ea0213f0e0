"""Checks of function files at start-up, in the server process, without running them.

The server never executes user code: it parses each file (a syntax error stops start-up
with the file and line) and looks for the handlers the kind needs among the file's top-level
definitions. The worker processes then load the code for real (:mod:`.pool`), and a fault
there stops start-up too, with the file and line the worker reports.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path

from headwater.config.workspace import FunctionConfig, Workspace
from headwater.errors import ConfigError

EVENT_HANDLERS = ("on_track", "on_identify", "on_page", "on_screen", "on_group", "on_alias",
                  "on_delete", "on_batch")  # fmt: skip


def check_files(workspace: Workspace, base: Path, environ: Mapping[str, str]) -> Workspace:
    """The workspace with each function's file made absolute (against ``base``, the
    workspace file's folder), after checking that each file parses, defines its handlers
    and that its ``{env: ...}`` settings are set; ConfigError naming the fault otherwise."""
    resolved: list[FunctionConfig] = []
    for i, f in enumerate(workspace.functions):
        path = (base / f.file).resolve()
        check_source(f.kind, path, f"functions[{i}].file")
        f.resolved_settings(environ)
        resolved.append(f.model_copy(update={"file": str(path)}))
    return workspace.model_copy(update={"functions": resolved})


def check_source(kind: str, path: Path, where: str) -> None:
    try:
        code = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {path}: {exc.strerror}") from exc
    try:
        tree = ast.parse(code, str(path))
    except SyntaxError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: SyntaxError: {exc.msg}") from None
    defined = top_level_names(tree)
    if "*" in defined:
        return  # `from x import *`: the worker's load says whether the handlers are there
    if kind == "source":
        if "on_request" not in defined:
            raise ConfigError(f"{path}:1: no handler: a source function defines "
                              "on_request(request, settings)")  # fmt: skip
    elif not defined.intersection(EVENT_HANDLERS):
        raise ConfigError(f"{path}:1: no handler: a {kind} function defines at least one of "
                          f"{', '.join(EVENT_HANDLERS)}")  # fmt: skip


def top_level_names(tree: ast.Module) -> set[str]:
    """The names the module's top level binds: functions, classes, assignments (annotated
    too) and imports (``*`` for a star import)."""
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names |= {a.asname or a.name.split(".")[0] for a in node.names}
    return names
