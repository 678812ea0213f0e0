"""Schemathesis generates requests for every operation of the management API's OpenAPI
document: none gets a server error (5xx), and every answer matches the document (status
code, content type, body schema).

The app runs in process; schemathesis's ASGI client starts its lifespan (log, delivery,
observe, processor), and its pytest plugin stops it when the test ends. Each operation is
fuzzed with valid and invalid inputs, with generated path parameters and with ones naming
things that exist (so the query parameters of real sources and destinations are exercised
too). The live debugger stream is left out: it never ends.

schemathesis's own pytest integration (``schemathesis.pytest.from_fixture``) fails on
pytest 9 (it sets ``Function._nodeid``), so the operations are driven through
``APIOperation.as_strategy`` with Hypothesis's ``@given``, all in one test: one app.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from headwater.app import Headwater
from headwater.config.workspace import parse_workspace
from headwater.state.admin_token import AdminToken, _digest

TOKEN = "hwa_schemathesis_token_0123456789"
ADMIN = {"authorization": f"Bearer {TOKEN}"}
WRITE_KEY = "wk_fuzz_website_1"
EXAMPLES = 25  # per operation and kind of path parameter; the module stays under a minute
EXISTING = {"sources": "website", "destinations": "hook", "devsink": "sink", "events": "m1"}
SKIPPED = {("GET", "/api/v1/sources/{name}/debugger/stream")}  # Server-Sent Events: never ends
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]  # fmt: skip


@pytest.fixture
def api_schema(tmp_path: Path) -> Iterator[Any]:
    workspace = parse_workspace({
        "sources": [{"name": "website", "write_key": WRITE_KEY}, {"name": "backend"}],
        "destinations": [
            {"name": "sink", "type": "devsink", "sources": ["website"]},
            # nothing listens there: its events wait for a retry, its errors are reported
            {"name": "hook", "type": "webhook", "sources": ["website", "backend"],
             "settings": {"url": "http://127.0.0.1:9/in", "shared_secret": "s3cret-s3cret"},
             "delivery": {"backoff_base_secs": 600}},
        ],
        "status": {"canary_enabled": False},
    })  # fmt: skip
    app = Headwater(workspace, tmp_path, admin_token=AdminToken(_digest(TOKEN), "env"))
    try:
        schema = schemathesis.openapi.from_asgi("/api/openapi.json", app, headers=ADMIN)
        with asgi.get_client(app) as client:  # something for every report to show
            for n in range(5):
                sent = client.post("/v1/track", auth=(WRITE_KEY, ""),
                                   json={"userId": f"u{n}", "event": "Fuzzed", "messageId": f"m{n}"})  # fmt: skip
                assert sent.status_code == 200, sent.text
            assert client.post("/v1/track", json={"writeKey": "wk_unknown"}).status_code == 401
            assert client.post("/v1/track", auth=(WRITE_KEY, ""), data=b"{").status_code == 400
        yield schema
    finally:
        asgi.shutdown_lifespans()


def existing_parameters(path: str) -> dict[str, str] | None:
    """Path parameters naming something that exists, for paths of that kind."""
    names = re.findall(r"\{([^}]+)\}", path)
    kind = path.split("/")[3]  # /api/v1/<kind>/...
    if not names or kind not in EXISTING:
        return None
    return {name: EXISTING[kind] for name in names}


# schemathesis's strategies touch the `random` module now and then (its pool of constants),
# which Hypothesis deprecates; that says nothing about Headwater
@pytest.mark.filterwarnings(
    "ignore:Do not use the `random` module inside strategies"
    ":hypothesis.errors.HypothesisDeprecationWarning"
)
def test_no_server_error_and_answers_match_the_document(api_schema: Any) -> None:
    operations = [
        api_schema[path][method]
        for path, methods in api_schema.raw_schema["paths"].items()
        for method in methods
        if (method.upper(), path) not in SKIPPED
    ]
    labels = {f"{op.method.upper()} {op.path}" for op in operations}
    # the observe routes at least; a broken document must not make this test vacuous
    assert {"GET /api/v1/diagnose", "GET /api/v1/events/{message_id}",
            "GET /api/v1/destinations/{name}/delivery", "GET /api/v1/sources/{name}/overview",
            "GET /api/v1/sources/{name}/debugger"} <= labels  # fmt: skip
    failures: dict[str, str] = {}
    for operation in operations:
        strategies = [operation.as_strategy(mode) for mode in GenerationMode]
        existing = existing_parameters(operation.path)
        if existing is not None:
            strategies += [operation.as_strategy(mode, path_parameters=existing)
                           for mode in GenerationMode]  # fmt: skip

        @given(case=st.one_of(strategies))
        @settings(max_examples=EXAMPLES * len(strategies) // 2, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])  # fmt: skip
        def fuzz(case: Any) -> None:
            response = case.call(headers=ADMIN)
            case.validate_response(response, checks=CHECKS, headers=ADMIN)

        try:
            fuzz()
        except Exception as exc:  # every operation is fuzzed; all failures are reported
            notes = getattr(exc, "__notes__", [])  # Hypothesis's falsifying example
            failures[f"{operation.method.upper()} {operation.path}"] = "\n".join([str(exc), *notes])
    assert not failures, "\n\n".join(f"{op}:\n{text}" for op, text in failures.items())
