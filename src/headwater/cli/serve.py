"""``headwater serve``: the server, with its roles (gateway, worker, all)."""

from __future__ import annotations

import gc
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from headwater import __version__
from headwater.cli.common import err, out
from headwater.config.keys import assign_write_keys
from headwater.config.workspace import Workspace, load_workspace
from headwater.errors import ConfigError, LogError
from headwater.state.admin_token import AUTH_DIR, TOKEN_FILE, ensure_admin_token, load_admin_token

SWITCH_INTERVAL_SECS = 0.001
GC_THRESHOLDS = (50_000, 20, 20)
KEEP_ALIVE_SECS = 5  # an idle keep-alive connection is closed after this long (uvicorn's default)
ROLES = ("all", "gateway", "worker")


def serve(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="Workspace YAML file.", envvar="HEADWATER_CONFIG")
    ] = Path("workspace.yaml"),
    data_dir: Annotated[
        Path,
        typer.Option(help="Where the log and state are kept.", envvar="HEADWATER_DATA_DIR"),
    ] = Path(".headwater"),
    host: Annotated[str, typer.Option(help="Address to listen on.", envvar="HEADWATER_HOST")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="Port to listen on.", envvar="HEADWATER_PORT")] = 8080,
    log_level: Annotated[
        str, typer.Option(help="debug, info, warning or error.", envvar="HEADWATER_LOG_LEVEL")
    ] = "info",
    role: Annotated[
        str,
        typer.Option(
            help="all: the gateway and a supervised delivery worker process; gateway: the "
            "HTTP server and the log writer only (with state on PostgreSQL, a gateway node "
            "that shows the worker nodes' delivery); worker: delivery only, beside a gateway "
            "on the same data directory, or a worker node of its own with shared state.",
            envvar="HEADWATER_ROLE",
        ),
    ] = "all",
    workers: Annotated[
        int,
        typer.Option(
            help="Gateway processes. Only 1 for now (docs/architecture.md).",
            envvar="HEADWATER_WORKERS",
        ),
    ] = 1,
    single_process: Annotated[
        bool,
        typer.Option(
            help="Run delivery on the gateway's event loop instead of a worker process.",
            envvar="HEADWATER_SINGLE_PROCESS",
        ),
    ] = False,
) -> None:
    """Run Headwater: the Tracking API on the durable embedded log, delivery beside it."""
    import uvicorn

    if role not in ROLES:
        raise typer.BadParameter(f"{role!r}; use one of {', '.join(ROLES)}", param_hint="--role")
    if workers != 1:
        raise typer.BadParameter(
            f"{workers}: one gateway process per machine for now (the log's writer answers "
            "one gateway); delivery already runs in its own process. See docs/architecture.md",
            param_hint="--workers",
        )
    if single_process and role != "all":
        raise typer.BadParameter("only with --role all", param_hint="--single-process")

    # The log's writer thread needs the GIL back a few times per group commit; the default
    # 5 ms switch interval makes it wait that long behind a busy event loop each time.
    sys.setswitchinterval(SWITCH_INTERVAL_SECS)
    # Each event makes a dozen short-lived containers; with the default threshold (700) the
    # young generation is collected several times per batch request. Objects alive at
    # start-up are frozen out of the collector's way.
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)

    from headwater.app import DeliveryMode, Headwater
    from headwater.gateway.protocol import timed_protocol

    try:
        workspace = load_workspace(config)
        if role == "worker":  # no keys nor tokens: the gateway makes and keeps those
            _run_worker(workspace, data_dir, log_level)
            return
        workspace, generated = assign_write_keys(workspace, data_dir)
    except ConfigError as exc:
        err.print(f"[bold red]Headwater did not start:[/] {exc}", highlight=False)
        raise typer.Exit(2) from exc
    try:
        new_token = ensure_admin_token(data_dir)
        token = load_admin_token(data_dir)
    except ConfigError as exc:
        err.print(f"[bold red]Headwater did not start:[/] {exc}", highlight=False)
        raise typer.Exit(2) from exc
    if new_token is not None:
        out.print(
            f"Generated the admin token (API and console): [bold]{new_token}[/]\n"
            f"  (only its hash is kept, in {data_dir / AUTH_DIR / TOKEN_FILE}; it is shown "
            "only this once — `headwater admin-token --reset` makes a new one)",
            highlight=False,
        )
    for warning in workspace.log.warnings():
        err.print(f"[bold yellow]Warning:[/] {warning}", highlight=False)
    for source in generated:
        out.print(
            f"Generated write key for source [bold]{source.name}[/]: {source.write_key}\n"
            f"  (kept in {data_dir / 'write_keys.json'}; it is shown only this once)",
            highlight=False,
        )
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the canary's request every 30 s
    mode: DeliveryMode = "remote" if role == "gateway" else "process"
    if single_process:
        mode = "inline"
    out.print(
        f"Headwater {__version__} listening on http://{host}:{port} "
        f"(workspace {workspace.name!r}, {len(workspace.sources)} source(s), data in {data_dir})",
        highlight=False,
    )
    uvicorn.run(
        Headwater(
            workspace,
            data_dir,
            self_url=f"http://{_connect_host(host)}:{port}",
            admin_token=token,
            delivery_mode=mode,
            log_level=log_level.lower(),
            workspace_file=config,
        ),
        host=host,
        port=port,
        # httptools with time limits for slowly sent headers and bodies (gateway/protocol.py)
        http=timed_protocol(
            workspace.gateway.headers_timeout_secs, workspace.gateway.body_timeout_secs
        ),
        loop="uvloop",
        access_log=False,
        log_level=log_level.lower(),
        lifespan="on",
        # the Tracking API applies gateway.trusted_proxies itself; uvicorn's middleware would
        # believe X-Forwarded-For from any local peer
        proxy_headers=False,
        timeout_graceful_shutdown=10,
        timeout_keep_alive=KEEP_ALIVE_SECS,
    )


def _run_worker(workspace: Workspace, data_dir: Path, log_level: str) -> None:
    """``--role worker``: delivery in this process, until SIGTERM or SIGINT."""
    import asyncio

    from headwater import worker_role

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    out.print(f"Headwater {__version__} delivery worker on {data_dir}", highlight=False)
    try:
        asyncio.run(worker_role.run(workspace, data_dir, watch_stdin=False))
    except LogError as exc:
        err.print(f"[bold red]The worker did not start:[/] {exc}", highlight=False)
        raise typer.Exit(2) from exc


def _connect_host(host: str) -> str:
    """An address the server can reach itself at (for the canary) when it listens on ``host``."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host
