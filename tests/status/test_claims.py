"""With shared state every gateway decides its own alerts; a claim in PostgreSQL sends each
once for the cluster, a new spell of a component still alerts, and a PostgreSQL that does
not answer lets every alert out."""

from __future__ import annotations

from contextlib import closing

import pytest

from headwater.status import claims as claims_module
from headwater.status.alerts import Outgoing
from headwater.status.claims import AlertClaims
from headwater.status.notifiers import AlertKind
from tests.fakes import free_port
from tests.postgres import Postgres, state_config
from tests.status.test_notifiers import make_alert

OPENED, RENOTIFY, RESOLVED = AlertKind.OPENED, AlertKind.RENOTIFY, AlertKind.RESOLVED


def test_two_gateways_send_each_alert_once_and_a_new_spell_again(postgres: Postgres) -> None:
    state = state_config(postgres)
    clock = [0]
    a = AlertClaims(state, "gw-a", now_ms=lambda: clock[0] * 1000)
    b = AlertClaims(state, "gw-b", now_ms=lambda: clock[0] * 1000)
    with closing(a), closing(b):

        def at(secs: int, node: AlertClaims, kind: AlertKind, renotify: float = 0.0) -> bool:
            clock[0] = secs
            return node.claim("destination:hook", kind, renotify)

        assert at(0, a, OPENED) and not at(1, b, OPENED), "the same outage, alerted once"
        assert at(60, b, RESOLVED) and not at(61, a, RESOLVED)
        assert at(120, a, OPENED), "failing again after a resolved alert: a new spell"
        assert not at(121, b, OPENED)
        assert not at(280, b, OPENED), "a node that starts during the outage: not again"
        assert not at(400, b, RENOTIFY, 600), "within 90 % of renotify_secs of the opening"
        assert at(700, b, RENOTIFY, 600) and not at(701, a, RENOTIFY, 600)
        clock[0] = 702
        assert a.claim("source:website", OPENED), "each component on its own"
        assert at(1_000, b, OPENED), "past CLAIM_SECS a node's own opening goes out"
        assert at(1_001, a, RESOLVED) and not at(1_002, b, RESOLVED)


def test_alerts_go_out_unclaimed_while_postgres_does_not_answer(
    postgres: Postgres, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(claims_module, "CLAIM_WAIT_SECS", 0.3)
    gone = state_config(postgres).model_copy(
        update={"dsn": f"postgresql://headwater@127.0.0.1:{free_port()}/postgres"}
    )
    outgoing = [Outgoing(make_alert(OPENED), ("chat",)), Outgoing(make_alert(RESOLVED), ("chat",))]
    with closing(AlertClaims(gone, "gw-a")) as claims:
        assert claims.sendable(outgoing, lambda _: 0.0) == outgoing
    assert "sending it anyway" in caplog.text
