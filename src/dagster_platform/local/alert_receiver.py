"""The local stack's chat webhook: a loopback HTTP server that appends each POSTed JSON body as one line to a
file (`make stack`: <state dir>/alerts.jsonl), so the platform-ops location's alerts are visible locally, and so
are Alertmanager's notifications (its webhook JSON is an object too: {"receiver", "status", "alerts": [...], ...}).

    python -m dagster_platform.local.alert_receiver --port N --out FILE [--status 500]

Standard library only. It answers every POST with `--status` (default 200; tests use 500 to see a refused
alert) and a body that is not a JSON object with 400; only accepted bodies are written. GET / answers 200
(readiness). Binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HOST = "127.0.0.1"


def make_server(port: int, out: Path, status: int = 200) -> ThreadingHTTPServer:
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            self._answer(200, b"alert receiver\n")

        def do_POST(self):  # noqa: N802
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                payload = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                payload = None
            if not isinstance(payload, dict):
                return self._answer(400, b"expected a JSON object\n")
            if 200 <= status < 300:
                with lock, out.open("a") as sink:
                    sink.write(json.dumps(payload, sort_keys=True) + "\n")
            self._answer(status, b"ok\n" if status < 300 else b"refused (--status)\n")

        def _answer(self, code: int, text: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)

        def log_message(self, format, *args):  # noqa: A002 - http.server's signature
            print(f"{self.address_string()} {format % args}", flush=True)

    out.parent.mkdir(parents=True, exist_ok=True)
    out.touch()
    return ThreadingHTTPServer((HOST, port), Handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="alert_receiver", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True, help="append each accepted JSON body here, one per line")
    parser.add_argument("--status", type=int, default=200, help="HTTP status to answer every POST with")
    args = parser.parse_args(argv)
    server = make_server(args.port, args.out, args.status)
    print(f"alert receiver on http://{HOST}:{args.port}/ answering {args.status}, writing {args.out}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
