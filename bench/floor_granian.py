"""The floor on granian instead of uvicorn, for ``bench/servers.py``: the same bare endpoint
(read the body, parse it with orjson, answer 200) as ``bench/floor.py``, served by granian
either through ASGI (``floor.app`` itself) or through RSGI, granian's own interface.

Run: ``python bench/floor_granian.py --interface rsgi --port 8081``
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import orjson

from floor import BAD_BODY, OK_BODY

HEADERS = [("content-type", "application/json")]


async def rsgi_app(scope: Any, protocol: Any) -> None:
    """RSGI entry point: one JSON parse per POST, 200 for the rest (the harness's GETs)."""
    if scope.proto != "http":
        return
    status, payload = 200, OK_BODY
    if scope.method == "POST":
        try:
            orjson.loads(await protocol())
        except orjson.JSONDecodeError:
            status, payload = 400, BAD_BODY
    protocol.response_bytes(status, HEADERS, payload)


def main() -> None:
    from granian import Granian  # a bench dependency only: pip install granian

    parser = argparse.ArgumentParser(description="The ingestion floor on granian.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--interface", choices=["asgi", "rsgi"], default="rsgi")
    options = parser.parse_args()
    target = "floor:app" if options.interface == "asgi" else "floor_granian:rsgi_app"
    Granian(target, address=options.host, port=options.port, interface=options.interface,
            workers=1, loop="uvloop", websockets=False, log_access=False,
            working_dir=Path(__file__).resolve().parent).serve()  # fmt: skip


if __name__ == "__main__":
    main()
