"""A local SMS platform for crash tests: speaks the generic ``http`` gateway's protocol
(``masthead.messaging.gateways.http``), deduplicates by ``Idempotency-Key`` and counts what it really
sent.

- A request is accepted (and, the first time its key is seen, counted as sent) as soon as it arrives;
  the answer follows after ``latency`` seconds. A dispatcher killed in between has had its message
  sent without learning it: the window a crash test must hit.
- A repeated key is answered 200 with the same platform id and counted as a repeat, not sent again.
- Sends are counted per message id of the body, not per key: a message sent under two keys counts twice.
- A request cut short by the sender's death is counted in ``aborted`` and not answered.
- Anything malformed (bad token, path, body, or a key that does not name the body's id) is answered
  4xx and recorded in ``errors``.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PATH = "/sms"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # a dispatcher opens up to SMS_CONCURRENCY connections at once
    allow_reuse_address = True


class CountingGateway:
    def __init__(self, *, token: str, latency: float = 0.0):
        self.token = token
        self.latency = latency
        self.lock = threading.Lock()
        self.requests = 0  # every POST received
        self.in_flight = 0  # POSTs received and not answered yet
        self.sent: Counter[str] = Counter()  # message id -> first acceptances (sends) under any key
        self.platform_ids: dict[str, str] = {}  # idempotency key -> the platform id it was given
        self.repeats: Counter[str] = Counter()  # message id -> repeated requests answered from the key store
        self.errors: list[str] = []
        self.aborted = 0  # requests whose sender died before the body arrived whole
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> CountingGateway:
        self._server = _Server(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="sms-counting-gateway", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}{PATH}"

    @property
    def repeated(self) -> int:
        return sum(self.repeats.values())

    # --- the platform --------------------------------------------------------------------------

    def accept(self, key: str, message_id: str) -> str:
        """The platform id for this request; counts a send the first time the key is seen."""
        with self.lock:
            platform_id = self.platform_ids.get(key)
            if platform_id is None:
                platform_id = self.platform_ids[key] = f"gw-{message_id}"
                self.sent[message_id] += 1
            else:
                self.repeats[message_id] += 1
            return platform_id

    def error(self, text: str) -> None:
        with self.lock:
            self.errors.append(text)

    def _handler(self):
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format, *args):
                pass

            def _answer(self, code: int, payload: dict) -> None:
                body = json.dumps(payload).encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # the dispatcher was killed while waiting for this answer
                    pass

            def _refuse(self, code: int, reason: str) -> None:
                gateway.error(f"{code} {reason}")
                self._answer(code, {"error": reason})

            def do_POST(self):
                with gateway.lock:
                    gateway.requests += 1
                    gateway.in_flight += 1
                try:
                    self._post()
                finally:
                    with gateway.lock:
                        gateway.in_flight -= 1

            def _post(self):
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    raw = self.rfile.read(length)
                except OSError:
                    raw = b""
                if len(raw) < length:  # the dispatcher died while sending the request: nothing to accept
                    with gateway.lock:
                        gateway.aborted += 1
                    return
                if self.path != PATH:
                    return self._refuse(404, f"path {self.path}")
                if self.headers.get("Authorization") != f"Bearer {gateway.token}":
                    return self._refuse(401, "bad token")
                try:
                    body = json.loads(raw)
                    message_id, to, text = str(body["id"]), body["to"], body["text"]
                except (ValueError, KeyError, TypeError):
                    return self._refuse(400, f"bad body {raw[:200]!r}")
                key = self.headers.get("Idempotency-Key", "")
                if key != f"masthead-sms-{message_id}" or not to.startswith("+") or not text:
                    return self._refuse(400, f"bad request key={key!r} id={message_id} to={to!r}")
                platform_id = gateway.accept(key, message_id)
                if gateway.latency:
                    time.sleep(gateway.latency)
                self._answer(200, {"id": platform_id})

        return Handler
