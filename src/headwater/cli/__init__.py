"""The ``headwater`` command, one module per command group:

- :mod:`.serve` runs the server, :mod:`.send` tries it with one event;
- :mod:`.delivery`: ``deadletter``, ``replay``, ``devsink``;
- :mod:`.destinations`: ``destinations test``;
- :mod:`.observe`: ``tail``, ``trace``, ``diagnose``, ``admin-token``;
- :mod:`.processor`: ``plans``, ``filters``;
- :mod:`.status`: ``status``, ``watch``, ``maintenance``;
- :mod:`.profiles`: ``profiles get | merges | delete``;
- :mod:`.tokens`: ``tokens create | list | revoke``; :mod:`.audit`: ``audit``;
- :mod:`.config`: ``export``, ``diff``, ``apply`` (config as code, through the API);
- :mod:`.warehouse`: ``warehouse status | sync | backfill``;
- :mod:`.functions`: ``functions list | url | logs | reload``;
- :mod:`.dev`: ``dev cluster`` (a JetStream cluster on this machine).

What they share (consoles, options, the API client, errors) is in :mod:`.common`.
"""

from __future__ import annotations

import typer

from headwater import __version__
from headwater.cli import (
    audiences,
    audit,
    config,
    delivery,
    destinations,
    dev,
    functions,
    observe,
    processor,
    profiles,
    send,
    serve,
    status,
    tokens,
    warehouse,
)
from headwater.cli.common import out

app = typer.Typer(
    help="Headwater: a self-hosted customer data platform that speaks Segment's protocol.",
    no_args_is_help=True,
    add_completion=False,
)

app.command()(serve.serve)
app.command()(send.send)
app.add_typer(delivery.deadletter_app, name="deadletter")
app.add_typer(status.maintenance_app, name="maintenance")
app.add_typer(processor.plans_app, name="plans")
app.add_typer(processor.filters_app, name="filters")
app.add_typer(destinations.destinations_app, name="destinations")
app.add_typer(profiles.profiles_app, name="profiles")
app.add_typer(audiences.audiences_app, name="audiences")
app.add_typer(tokens.tokens_app, name="tokens")
app.add_typer(warehouse.warehouse_app, name="warehouse")
app.add_typer(functions.functions_app, name="functions")
app.add_typer(dev.dev_app, name="dev")
app.command()(audit.audit)
app.command()(config.export)
app.command()(config.diff)
app.command()(config.apply)
app.command()(status.status)
app.command()(status.watch)
app.command()(delivery.replay)
app.command()(delivery.devsink)
app.command()(observe.tail)
app.command()(observe.trace)
app.command()(observe.diagnose)
app.command("admin-token")(observe.admin_token)


@app.command()
def version() -> None:
    """Print Headwater's version."""
    out.print(__version__)


def main() -> None:
    app()
