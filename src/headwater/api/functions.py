"""Management API routes for functions: what each did (invocations, errors, p50/p99, the
last logs and sampled failures), a source function's URL, and reloads (docs/functions.md).

The figures come from the stats files every process that runs functions writes each second
(``<data-dir>/functions/<role>.json``): the gateway's source functions and the delivery
worker's destination and insert functions alike. A source function's URL holds its secret,
so it needs ``functions:write``, not just ``functions:read``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request

from headwater.api.auth import requires
from headwater.config.workspace import FunctionConfig, Workspace, load_workspace
from headwater.errors import ConfigError
from headwater.functions.host import read_stats, request_reload, restart_needed
from headwater.functions.sources import SecretStore, url_path
from headwater.observe.service import ObserveError

DETAIL_ONLY = ("logs", "failures")


def summary(config: FunctionConfig, stats: dict[str, Any] | None) -> dict[str, Any]:
    """A function's declaration and what it did (``stats``: its entry of the stats files,
    None when no process runs it): the API's and the console's document."""
    where: dict[str, Any] = {}
    if config.kind == "source":
        where["source"] = config.source
    elif config.kind == "destination":
        where["sources"] = list(config.sources)
    else:
        where["destination"] = config.destination
    running = stats is not None
    figures = {k: v for k, v in (stats or {}).items() if k not in ("name", "kind")}
    return {"name": config.name, "kind": config.kind, "file": config.file, **where,
            "running": running, **figures}  # fmt: skip


def source_url(state_dir: Path, name: str, base_url: str) -> str:
    """A source function's URL on the server ``base_url`` names (its secret made if new)."""
    secret = SecretStore(state_dir).get([name])[name]
    return base_url.rstrip("/") + url_path(name, secret)


def register(
    app: FastAPI, workspace: Workspace, state_dir: Path, workspace_file: Path | None = None
) -> None:
    read = [requires("functions:read")]
    write = [requires("functions:write")]
    configs = {f.name: f for f in workspace.functions}

    def known(name: str) -> FunctionConfig:
        config = configs.get(name)
        if config is None:
            names = ", ".join(sorted(configs)) or "none (declare functions: in the workspace)"
            raise ObserveError("not_found", f"no function is named {name!r}; the functions "
                               f"are {names}", 404)  # fmt: skip
        return config

    @app.get("/api/v1/functions", tags=["functions"], dependencies=read,
             summary="List the functions with their invocations, errors and durations")  # fmt: skip
    async def list_functions() -> dict[str, Any]:
        stats = read_stats(state_dir)
        found = []
        for config in configs.values():
            doc = summary(config, stats.get(config.name))
            for key in DETAIL_ONLY:
                doc.pop(key, None)
            found.append(doc)
        return {"functions": found}

    @app.get("/api/v1/functions/{name}", tags=["functions"], dependencies=read,
             summary="One function: figures, the last log lines, sampled failures")  # fmt: skip
    async def get_function(name: str) -> dict[str, Any]:
        config = known(name)
        return summary(config, read_stats(state_dir).get(name))

    @app.get("/api/v1/functions/{name}/url", tags=["functions"], dependencies=write,
             summary="A source function's URL (it holds the function's secret)")  # fmt: skip
    async def function_url(name: str, request: Request) -> dict[str, Any]:
        config = known(name)
        if config.kind != "source":
            raise ObserveError("not_a_source_function", f"function {name!r} is a "
                               f"{config.kind} function; only source functions have a URL",
                               400)  # fmt: skip
        return {"name": name, "url": source_url(state_dir, name, str(request.base_url))}

    @app.post("/api/v1/functions/reload", tags=["functions"], dependencies=write,
              summary="Reload every function's code and settings in every process, within "
              "a second")  # fmt: skip
    async def reload_functions() -> dict[str, Any]:
        if workspace_file is None:  # a server not started from a file: the code only
            request_reload(state_dir)
            return {"requested": sorted(configs), "restart_needed": []}
        try:
            fresh = await asyncio.to_thread(load_workspace, workspace_file)
        except ConfigError as exc:
            raise ObserveError("invalid_workspace", f"nothing was reloaded: {exc}; fix the "
                               "workspace file and reload again", 400) from None  # fmt: skip
        request_reload(state_dir, fresh.functions)
        return {"requested": sorted(configs),
                "restart_needed": restart_needed(workspace.functions, fresh.functions)}  # fmt: skip
