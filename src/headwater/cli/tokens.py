"""``headwater tokens create | list | revoke``: scoped API tokens of a data directory.

Like ``headwater deadletter``, these work on the files in ``--data-dir``
(:mod:`headwater.state.tokens`), or on PostgreSQL when the workspace at ``--config`` says
``state: {backend: postgres}``, beside a running server or without one: the server looks a
token up at every request, so a new token works, and a revoked one stops, at once (within
a second on every node, with shared state). Each change is recorded in the audit trail as
``local:<user>`` from the CLI.
"""

from __future__ import annotations

from contextlib import closing
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from headwater.api.permissions import ROLE_HELP, validate_role
from headwater.cli.common import (
    DEFAULT_CONFIG,
    DEFAULT_DATA_DIR,
    ConfigOption,
    DataDirOption,
    out,
    record_change,
    refuse,
)
from headwater.config.workspace import Workspace, load_workspace
from headwater.errors import ConfigError
from headwater.state import postgres
from headwater.state.migrations import MigrationError
from headwater.state.sql import StateUnavailable
from headwater.state.tokens import TokenError, TokenStore
from headwater.status.statuspage import iso

tokens_app = typer.Typer(
    help="Create, list and revoke scoped API tokens (stored hashed; shown once).",
    no_args_is_help=True,
)


def _workspace(config: Path) -> Workspace | None:
    """The workspace, for its sources and where it keeps state; None when there is no file
    (then: the data directory's tokens, and ``--source`` is left to the server's 403s)."""
    if not config.exists():
        return None
    try:
        return load_workspace(config)
    except ConfigError as exc:
        raise refuse(f"cannot read {config}: {exc}") from None


def _store(data_dir: Path, workspace: Workspace | None) -> TokenStore:
    """The tokens where the workspace keeps them: PostgreSQL with ``state: {backend:
    postgres}`` (every node's), else the data directory's file."""
    state = workspace.state if workspace is not None else None
    if postgres.uses_postgres(state):
        try:
            return TokenStore.open(data_dir, state)
        except (StateUnavailable, MigrationError) as exc:
            raise refuse(str(exc)) from None
    if not data_dir.exists():
        raise refuse(f"no data directory at {data_dir}; check --data-dir")
    return TokenStore.for_data_dir(data_dir)


@tokens_app.command("create")
def tokens_create(
    name: Annotated[str, typer.Option(help="A name for the token: the audit trail's 'who'.")],
    role: Annotated[
        str, typer.Option(help=f"One of: {', '.join(f'{r} ({h})' for r, h in ROLE_HELP.items())}.")
    ],
    source: Annotated[
        str | None, typer.Option(help="For source_admin: the one source it may manage.")
    ] = None,
    config: ConfigOption = DEFAULT_CONFIG,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
) -> None:
    """Create a token and print it once (only its SHA-256 is kept)."""
    workspace = _workspace(config)
    try:
        validate_role(role, source, [s.name for s in workspace.sources] if workspace else None)
    except ValueError as exc:
        raise refuse(str(exc)) from None
    with closing(_store(data_dir, workspace)) as store:
        try:
            record, token = store.create(name, role, source, created_by="cli")
        except TokenError as exc:
            raise refuse(str(exc)) from None
    record_change(data_dir, "create", f"tokens/{name}", {"role": role, "source": source},
                  workspace.state if workspace else None)  # fmt: skip
    out.print(token, highlight=False, soft_wrap=True)
    scope = f" for source {source}" if source else ""
    typer.echo(
        f"Token {record.name} (role {role}{scope}) created. It is shown only now: store it in "
        "your secret manager. Send it as `Authorization: Bearer <token>`.",
        err=True,
    )


@tokens_app.command("list")
def tokens_list(
    all_: Annotated[bool, typer.Option("--all", help="Include revoked tokens.")] = False,
    config: ConfigOption = DEFAULT_CONFIG,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
) -> None:
    """List tokens: names, roles, sources and when they were made (never the tokens)."""
    with closing(_store(data_dir, _workspace(config))) as store:
        records = store.list(include_revoked=all_)
    if not records:
        out.print("No tokens. Make one with `headwater tokens create --name N --role R`.")
        return
    table = Table("name", "role", "source", "created (UTC)", "revoked (UTC)")
    for r in records:
        table.add_row(r.name, r.role, r.source or "", iso(r.created_ms) or "",
                      iso(r.revoked_ms) or "")  # fmt: skip
    out.print(table)


@tokens_app.command("revoke")
def tokens_revoke(
    name: Annotated[str, typer.Argument(help="The token's name, as `list` shows it.")],
    config: ConfigOption = DEFAULT_CONFIG,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
) -> None:
    """Revoke a token: it stops working at its next request (on every node within a
    second, with shared state)."""
    workspace = _workspace(config)
    with closing(_store(data_dir, workspace)) as store:
        try:
            record = store.revoke(name)
        except TokenError as exc:
            raise refuse(str(exc)) from None
    record_change(data_dir, "revoke", f"tokens/{name}", {"role": record.role},
                  workspace.state if workspace else None)  # fmt: skip
    out.print(f"Token {name} revoked.")


__all__ = ["tokens_app"]
