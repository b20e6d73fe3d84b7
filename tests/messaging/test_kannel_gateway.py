"""The Kannel adapter against a local stand-in for smsbox's sendsms (stdlib HTTP server on 127.0.0.1):
the exact query it sends and how it reads each documented answer."""

import http.server
import logging
import threading
import time
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from masthead.messaging import dispatcher, gateways, services
from masthead.messaging.gateways.kannel import KannelGateway
from masthead.messaging.models import SmsMessage
from tests.messaging.conftest import NOW

M = SmsMessage


class FakeSmsbox(http.server.ThreadingHTTPServer):
    """Answers every GET with ``self.reply`` (status, body) over HTTP/1.1 keep-alive; records what it got."""

    daemon_threads = True

    def __init__(self):
        self.reply = (202, "0: Accepted for delivery")
        self.delay = 0.0
        self.close_after_answer = False
        self.requests: list[tuple[str, dict, str]] = []  # (path, query, raw query)
        self.times: list[float] = []  # when each request arrived
        self.connections = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                outer.connections += 1

            def do_GET(self):
                url = urlsplit(self.path)
                outer.times.append(time.monotonic())
                outer.requests.append((url.path, parse_qs(url.query, keep_blank_values=True), url.query))
                if outer.delay:
                    time.sleep(outer.delay)
                status, body = outer.reply
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(data)))
                if outer.close_after_answer:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    def handle_error(self, request, client_address):
        pass  # the client gave up (the timeout test): nothing to report


@pytest.fixture
def smsbox(settings):
    server = FakeSmsbox()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    settings.KANNEL_SENDSMS_URL = f"http://127.0.0.1:{server.server_address[1]}/cgi-bin/sendsms"
    settings.KANNEL_USERNAME, settings.KANNEL_PASSWORD = "crm", "p@ss word&"
    settings.SMS_SENDER = "Masthead"
    settings.SMS_PUBLIC_URL = "https://crm.example.com/"
    settings.SMS_WEBHOOK_SECRET = "s&cret/1"
    settings.KANNEL_TIMEOUT_SECONDS = 2
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def gateway():
    return KannelGateway()  # a fresh instance: no connection kept from another test


def outgoing(text="Hello Jana", encoding="gsm7", message_id=42, to="+421908123456"):
    return gateways.Outgoing(message_id, to, text, encoding)


DLR_URL_42 = "https://crm.example.com/sms/kannel/dlr?secret=s%26cret%2F1&ref=42&status=%d&answer=%A&ts=%T"


def test_registered_as_kannel():
    assert isinstance(gateways.get("kannel"), KannelGateway)


def test_the_exact_query_of_a_gsm7_message(smsbox, gateway):
    result = gateway.send(outgoing())
    assert result == gateways.SendResult("accepted", gateway_message_id="42")
    [(path, query, raw)] = smsbox.requests
    assert path == "/cgi-bin/sendsms"
    assert query == {"username": ["crm"], "password": ["p@ss word&"], "from": ["Masthead"], "to": ["+421908123456"],
                     "text": ["Hello Jana"], "charset": ["UTF-8"], "dlr-mask": ["19"], "dlr-url": [DLR_URL_42]}
    # Kannel's escapes travel as literal text inside one URL-encoded value: %d as %25d, & as %26
    assert raw == ("username=crm&password=p%40ss%20word%26&from=Masthead&to=%2B421908123456&text=Hello%20Jana"
                   "&charset=UTF-8&dlr-mask=19&dlr-url=https%3A%2F%2Fcrm.example.com%2Fsms%2Fkannel%2Fdlr"
                   "%3Fsecret%3Ds%2526cret%252F1%26ref%3D42%26status%3D%25d%26answer%3D%25A%26ts%3D%25T")


def test_unicode_text_goes_as_ucs2_in_utf8(smsbox, gateway):
    text = "Ďakujeme, že čítate 😀"
    assert gateway.send(outgoing(text, "ucs2", 7)).outcome == "accepted"
    [(_path, query, raw)] = smsbox.requests
    assert (query["text"], query["coding"], query["charset"]) == ([text], ["2"], ["UTF-8"])
    assert "text=%C4%8Eakujeme%2C%20%C5%BEe%20%C4%8D%C3%ADtate%20%F0%9F%98%80&" in raw
    gateway.send(outgoing("plain", "gsm7", 8))
    assert "coding" not in smsbox.requests[1][1]


@pytest.mark.parametrize(("status", "body", "outcome", "error"), [
    (202, "0: Accepted for delivery", "accepted", ""),
    (202, "3: Queued for later delivery", "accepted", ""),
    (503, "Temporal failure, try again later.", "transient", "kannel 503: Temporal failure, try again later."),
    (403, "Not routable. Do not try again.", "permanent", "kannel 403: Not routable. Do not try again."),
    (400, "Missing receiver number, rejected", "permanent", "kannel 400: Missing receiver number, rejected"),
    (400, "Charset or body misformed, rejected", "permanent", "kannel 400: Charset or body misformed, rejected"),
    (500, "", "transient", "kannel 500"),
    (429, "slow down", "transient", "kannel 429: slow down"),
    (404, "Not found", "permanent", "kannel 404: Not found"),
])
def test_each_documented_answer(smsbox, gateway, status, body, outcome, error):
    smsbox.reply = (status, body)
    result = gateway.send(outgoing())
    assert (result.outcome, result.error) == (outcome, error)
    assert result.gateway_message_id == ("42" if outcome == "accepted" else None)


def test_wrong_credentials_are_transient_and_logged_as_an_error(smsbox, gateway, caplog):
    """A misconfiguration must not burn the queue: the messages stay for a retry, and someone is told."""
    smsbox.reply = (403, "Authorization failed for sendsms")
    with caplog.at_level(logging.ERROR, logger="masthead.messaging.gateways.kannel"):
        result = gateway.send(outgoing())
    assert (result.outcome, result.error) == ("transient", "kannel 403: Authorization failed for sendsms")
    assert [r.levelname for r in caplog.records] == ["ERROR"]
    assert "KANNEL_USERNAME" in caplog.records[0].getMessage()


def test_connection_refused_is_transient(settings, gateway):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings.KANNEL_SENDSMS_URL = f"http://127.0.0.1:{port}/cgi-bin/sendsms"
    result = gateway.send(outgoing())
    assert result.outcome == "transient"
    assert result.error.startswith("kannel: ConnectionRefusedError")


def test_timeout_is_transient(smsbox, gateway, settings):
    settings.KANNEL_TIMEOUT_SECONDS = 0.2
    smsbox.delay = 1.0
    started = time.monotonic()
    result = gateway.send(outgoing())
    assert time.monotonic() - started < 0.9
    assert (result.outcome, result.error) == ("transient", "kannel: TimeoutError: timed out")


def test_a_bad_url_setting_is_transient(settings, gateway):
    settings.KANNEL_SENDSMS_URL = "ftp://example.com/sendsms"
    assert gateway.send(outgoing()) == gateways.SendResult("transient", error="KANNEL_SENDSMS_URL is not an http(s) URL")


def test_one_kept_alive_connection_per_thread_and_reconnects_when_closed(smsbox, gateway):
    for message_id in range(1, 6):
        assert gateway.send(outgoing(message_id=message_id)).outcome == "accepted"
    assert (len(smsbox.requests), smsbox.connections) == (5, 1)
    smsbox.close_after_answer = True  # smsbox closes after this answer; the next send opens a new connection
    assert gateway.send(outgoing(message_id=6)).outcome == "accepted"
    smsbox.close_after_answer = False
    assert gateway.send(outgoing(message_id=7)).outcome == "accepted"
    assert (len(smsbox.requests), smsbox.connections) == (7, 2)
    assert [q["dlr-url"][0].split("ref=")[1].split("&")[0] for _p, q, _r in smsbox.requests] == [
        "1", "2", "3", "4", "5", "6", "7"]


@pytest.mark.django_db
def test_dispatched_through_kannel(smsbox, reader, clock, settings):
    settings.SMS_GATEWAY = "kannel"
    first = services.queue_sms(user=reader, body="Your code is 1234")
    second = services.queue_sms(user=reader, body="Ďakujeme 😀")
    result = dispatcher.run(budget_seconds=5)
    assert (result.claimed, result.outcomes) == (2, {"sent": 2})
    for message in (first, second):
        message = M.objects.get(pk=message.pk)
        assert (message.status, message.gateway, message.gateway_message_id, message.sent_at) == (
            "sent", "kannel", str(message.pk), NOW)
    sent = {q["dlr-url"][0]: (q["text"][0], q.get("coding")) for _p, q, _r in smsbox.requests}
    assert sent == {
        DLR_URL_42.replace("ref=42", f"ref={first.pk}"): ("Your code is 1234", None),
        DLR_URL_42.replace("ref=42", f"ref={second.pk}"): ("Ďakujeme 😀", ["2"]),
    }


@pytest.mark.django_db
def test_the_rate_limit_holds_when_pumped(smsbox, make_user, clock, settings):
    """SMS_RATE_PER_SECOND across the requests in flight: 10 messages at 20/s take 0.45 s at least."""
    settings.SMS_GATEWAY, settings.SMS_RATE_PER_SECOND, settings.SMS_CONCURRENCY = "kannel", 20, 8
    for n in range(10):
        services.queue_sms(user=make_user(email=f"r{n}@example.com", phone_number=f"+42190800{n:04d}"), body="x",
                           urgent=True)
    assert dispatcher.run(budget_seconds=10).outcomes == {"sent": 10}
    gaps = [later - earlier for earlier, later in zip(smsbox.times, smsbox.times[1:])]
    assert len(smsbox.times) == 10
    assert smsbox.times[-1] - smsbox.times[0] >= 0.45 - 0.02
    assert min(gaps) >= 0.05 - 0.02  # none in a burst


@pytest.mark.django_db
def test_refusals_through_the_dispatcher(smsbox, reader, clock, settings):
    settings.SMS_GATEWAY = "kannel"
    settings.SMS_RETRY_DELAYS = "PT1M"
    smsbox.reply = (403, "Not routable. Do not try again.")
    refused = services.queue_sms(user=reader, body="one")
    dispatcher.run(budget_seconds=5)
    smsbox.reply = (503, "Temporal failure, try again later.")
    busy = services.queue_sms(user=reader, body="two")
    dispatcher.run(budget_seconds=5)
    refused, busy = M.objects.get(pk=refused.pk), M.objects.get(pk=busy.pk)
    assert (refused.status, refused.error_message) == ("rejected", "kannel 403: Not routable. Do not try again.")
    assert (busy.status, busy.error_message, busy.attempts) == (
        "queued", "kannel 503: Temporal failure, try again later.", 1)
    assert busy.next_attempt_at == NOW + timedelta(minutes=1)


# --- the HTTP reader, against answers written byte for byte ---------------------------------------------


class RawSmsbox:
    """Reads each request's head and writes the next scripted answer: ``(bytes, close_after)``."""

    def __init__(self):
        import socket

        self.script: list[tuple[bytes, bool]] = []
        self.requests: list[bytes] = []
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, conn):
        buffer = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                self.requests.append(head)
                answer, close = self.script.pop(0)
                conn.sendall(answer)
                if close:
                    return

    def close(self):
        self.listener.close()


@pytest.fixture
def raw_smsbox(settings):
    server = RawSmsbox()
    settings.KANNEL_SENDSMS_URL = f"http://127.0.0.1:{server.listener.getsockname()[1]}/cgi-bin/sendsms"
    settings.KANNEL_TIMEOUT_SECONDS = 2
    yield server
    server.close()


ACCEPTED_ANSWER = b"HTTP/1.1 202 Accepted\r\nContent-Length: 24\r\nContent-type: text/html\r\n\r\n0: Accepted for delivery"


def test_the_request_is_one_plain_get_with_host(raw_smsbox, gateway, settings):
    raw_smsbox.script = [(ACCEPTED_ANSWER, False)]
    assert gateway.send(outgoing()).outcome == "accepted"
    [head] = raw_smsbox.requests
    port = raw_smsbox.listener.getsockname()[1]
    lines = head.decode().split("\r\n")
    assert lines[0].startswith("GET /cgi-bin/sendsms?username=") and lines[0].endswith(" HTTP/1.1")
    assert lines[1:] == [f"Host: 127.0.0.1:{port}", "Accept: text/plain"]


def test_a_chunked_answer_is_read_whole_and_the_connection_kept(raw_smsbox, gateway):
    chunked = (b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"8\r\nTemporal\r\n1a; ext=1\r\n failure, try again later.\r\n0\r\nX-Trailer: 1\r\n\r\n")
    raw_smsbox.script = [(chunked, False), (ACCEPTED_ANSWER, False)]
    assert gateway.send(outgoing()) == gateways.SendResult(
        "transient", error="kannel 503: Temporal failure, try again later.")
    assert gateway.send(outgoing()).outcome == "accepted"
    assert (len(raw_smsbox.requests), raw_smsbox.connections) == (2, 1)


def test_an_answer_without_length_ends_with_the_connection(raw_smsbox, gateway):
    raw_smsbox.script = [(b"HTTP/1.0 202 Accepted\r\n\r\n3: Queued for later delivery", True), (ACCEPTED_ANSWER, False)]
    assert gateway.send(outgoing()).outcome == "accepted"
    assert gateway.send(outgoing()).outcome == "accepted"
    assert (len(raw_smsbox.requests), raw_smsbox.connections) == (2, 2)


def test_an_http_1_0_answer_closes_unless_kept_alive(raw_smsbox, gateway):
    raw_smsbox.script = [
        (b"HTTP/1.0 202 Accepted\r\nContent-Length: 2\r\nConnection: Keep-Alive\r\n\r\n0:", False),
        (b"HTTP/1.0 202 Accepted\r\nContent-Length: 2\r\n\r\n0:", False),
        (ACCEPTED_ANSWER, False)]
    for _ in range(3):
        assert gateway.send(outgoing()).outcome == "accepted"
    assert raw_smsbox.connections == 2


def test_a_connection_closed_while_idle_is_retried_once_on_a_new_one(raw_smsbox, gateway):
    """smsbox may drop a kept-alive connection without saying so: the request finds it closed before
    any answer and goes once more on a fresh connection."""
    raw_smsbox.script = [(ACCEPTED_ANSWER, True), (ACCEPTED_ANSWER, False)]
    assert gateway.send(outgoing(message_id=1)).outcome == "accepted"
    time.sleep(0.1)  # the server has closed by now
    assert gateway.send(outgoing(message_id=2)) == gateways.SendResult("accepted", gateway_message_id="2")
    assert (len(raw_smsbox.requests), raw_smsbox.connections) == (2, 2)


@pytest.mark.parametrize(("answer", "error"), [
    (b"hello\r\n\r\n", "kannel: ValueError: not an HTTP answer: 'hello'"),
    (b"HTTP/1.1 202 Accepted\r\nContent-Length: 999999\r\n\r\n", "kannel: ValueError: answer of 999999 bytes"),
    (b"HTTP/1.1 202 Accepted\r\nContent-Length: 24\r\n\r\n0: Acc",
     "kannel: ConnectionError: closed in the middle of an answer"),
    (b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "kannel: ValueError: invalid literal for "
     "int() with base 16: b'zz'"),
])
def test_a_broken_answer_is_transient_and_not_retried(raw_smsbox, gateway, answer, error):
    raw_smsbox.script = [(answer, True), (ACCEPTED_ANSWER, False)]
    assert gateway.send(outgoing()) == gateways.SendResult("transient", error=error)
    assert len(raw_smsbox.requests) == 1
    assert gateway.send(outgoing()).outcome == "accepted"  # on a new connection
    assert raw_smsbox.connections == 2


# --- many requests in flight from one thread (the dispatcher's way) --------------------------------------


class Work:
    """What the dispatcher gives ``pump``: messages to take, and a place for each answer."""

    def __init__(self, messages):
        self.todo = list(messages)
        self.answers: dict[int, gateways.SendResult] = {}

    def take(self, block):
        return (self.todo[0].message_id, self.todo.pop(0)) if self.todo else None

    def give(self, item, result):
        assert item not in self.answers, "answered twice"
        self.answers[item] = result


def test_pump_sends_everything_on_at_most_concurrency_connections(smsbox, gateway):
    smsbox.delay = 0.05  # so that requests overlap
    work = Work(outgoing(message_id=n) for n in range(1, 21))
    started = time.monotonic()
    gateway.pump(work, 5)
    assert time.monotonic() - started < 0.05 * 20 / 2  # not one after another
    assert work.answers == {n: gateways.SendResult("accepted", gateway_message_id=str(n)) for n in range(1, 21)}
    refs = sorted(int(q["dlr-url"][0].split("ref=")[1].split("&")[0]) for _p, q, _r in smsbox.requests)
    assert refs == list(range(1, 21))
    assert smsbox.connections == 5  # kept alive and reused


def test_pump_answers_each_message_with_its_own_outcome(smsbox, gateway):
    work = Work([outgoing(message_id=1)])
    gateway.pump(work, 3)
    smsbox.reply = (403, "Not routable. Do not try again.")
    work2 = Work([outgoing(message_id=2)])
    gateway.pump(work2, 3)
    assert work.answers == {1: gateways.SendResult("accepted", gateway_message_id="1")}
    assert work2.answers == {2: gateways.SendResult("permanent", error="kannel 403: Not routable. Do not try again.")}


def test_pump_times_out_each_request_without_holding_up_the_others(smsbox, gateway, settings):
    settings.KANNEL_TIMEOUT_SECONDS = 0.2
    smsbox.delay = 1.0
    work = Work(outgoing(message_id=n) for n in range(1, 4))
    started = time.monotonic()
    gateway.pump(work, 3)
    assert time.monotonic() - started < 0.9
    assert work.answers == {n: gateways.SendResult("transient", error="kannel: TimeoutError: timed out")
                            for n in range(1, 4)}


def test_pump_retries_once_on_a_connection_smsbox_closed(raw_smsbox, gateway):
    raw_smsbox.script = [(ACCEPTED_ANSWER, True), (ACCEPTED_ANSWER, False)]
    work = Work([outgoing(message_id=1)])
    gateway.pump(work, 1)
    time.sleep(0.1)
    work.todo = [outgoing(message_id=2)]
    gateway.pump(work, 1)
    assert work.answers == {1: gateways.SendResult("accepted", gateway_message_id="1"),
                            2: gateways.SendResult("accepted", gateway_message_id="2")}
    assert (len(raw_smsbox.requests), raw_smsbox.connections) == (2, 2)


def test_pump_reads_broken_answers_as_transient(raw_smsbox, gateway):
    raw_smsbox.script = [(b"HTTP/1.1 202 Accepted\r\nContent-Length: 24\r\n\r\n0: Acc", True)]
    work = Work([outgoing(message_id=1)])
    gateway.pump(work, 2)
    assert work.answers == {1: gateways.SendResult("transient",
                                                   error="kannel: ConnectionError: closed in the middle of an answer")}


def test_pump_with_nowhere_to_send(settings, gateway):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings.KANNEL_SENDSMS_URL = f"http://127.0.0.1:{port}/cgi-bin/sendsms"
    work = Work(outgoing(message_id=n) for n in (1, 2))
    gateway.pump(work, 2)
    assert {n: r.error.split(":")[1].strip() for n, r in work.answers.items()} == {
        1: "ConnectionRefusedError", 2: "ConnectionRefusedError"}
    settings.KANNEL_SENDSMS_URL = "ftp://example.com/sendsms"
    work = Work([outgoing(message_id=3)])
    gateway.pump(work, 2)
    assert work.answers == {3: gateways.SendResult("transient", error="KANNEL_SENDSMS_URL is not an http(s) URL")}


def test_parse_answer_waits_for_the_whole_answer():
    from masthead.messaging.gateways.kannel import parse_answer

    whole = ACCEPTED_ANSWER + b"HTTP/1.1"
    for cut in range(len(ACCEPTED_ANSWER)):
        assert parse_answer(whole[:cut], ended=False) is None
    answer = parse_answer(whole, ended=False)
    assert (answer.status, answer.body, answer.keep_alive, answer.rest) == (
        202, b"0: Accepted for delivery", True, b"HTTP/1.1")


@pytest.fixture
def tls_smsbox(smsbox, settings, tmp_path, monkeypatch):
    """The stand-in smsbox behind TLS, with a certificate for 127.0.0.1 that the client trusts."""
    import shutil
    import ssl
    import subprocess

    if not shutil.which("openssl"):
        pytest.skip("openssl is needed to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    smsbox.socket = context.wrap_socket(smsbox.socket, server_side=True)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    settings.KANNEL_SENDSMS_URL = settings.KANNEL_SENDSMS_URL.replace("http://", "https://")
    return smsbox


def test_https_one_by_one_and_pumped(tls_smsbox, gateway):
    assert gateway.send(outgoing(message_id=1)) == gateways.SendResult("accepted", gateway_message_id="1")
    work = Work(outgoing(message_id=n) for n in (2, 3, 4))
    gateway.pump(work, 2)
    assert work.answers == {n: gateways.SendResult("accepted", gateway_message_id=str(n)) for n in (2, 3, 4)}
    assert len(tls_smsbox.requests) == 4


def test_pump_opens_few_connections_at_once(smsbox, gateway, monkeypatch):
    """A burst of connects would overflow smsbox's backlog: at most PUMP_OPENING are pending at once,
    and the requests go out on the connections as they open."""
    from masthead.messaging.gateways import kannel

    monkeypatch.setattr(kannel, "PUMP_OPENING", 2)
    pending = {"now": 0, "most": 0}
    connect_later, connected = kannel._Connection.connect_later, kannel._Connection.connected

    def counting_connect_later(self):
        pending["now"] += 1
        pending["most"] = max(pending["most"], pending["now"])
        return connect_later(self)

    def counting_connected(self):
        pending["now"] -= 1
        return connected(self)

    monkeypatch.setattr(kannel._Connection, "connect_later", counting_connect_later)
    monkeypatch.setattr(kannel._Connection, "connected", counting_connected)
    smsbox.delay = 0.02
    work = Work(outgoing(message_id=n) for n in range(1, 31))
    gateway.pump(work, 10)
    assert work.answers == {n: gateways.SendResult("accepted", gateway_message_id=str(n)) for n in range(1, 31)}
    assert pending["most"] in (1, 2) and pending["now"] == 0  # 1: each connect done before the next take
    assert 2 < smsbox.connections <= 10  # more opened as others were busy, never more than the concurrency


def test_a_request_the_socket_takes_in_part_is_finished_waiting():
    """The pump's sockets do not wait; when one takes only part of a request (its buffer is full),
    the rest goes out waiting at most the timeout, and the socket is left not waiting again."""
    from masthead.messaging.gateways.kannel import _Connection

    class PartSocket:
        def __init__(self):
            self.calls, self.timeout = [], 0.0

        def gettimeout(self):
            return self.timeout

        def send(self, data):
            self.calls.append(("send", data))
            return 10

        def settimeout(self, value):
            self.calls.append(("settimeout", value))
            self.timeout = value

        def sendall(self, data):
            self.calls.append(("sendall", data))

        def setblocking(self, flag):
            self.calls.append(("setblocking", flag))
            self.timeout = None if flag else 0.0

    connection = _Connection(("http", "127.0.0.1", 13913), 3.0)
    connection.sock = PartSocket()
    connection.request("/cgi-bin/sendsms?x=1")
    data = b"GET /cgi-bin/sendsms?x=1 HTTP/1.1\r\nHost: 127.0.0.1:13913\r\nAccept: text/plain\r\n\r\n"
    assert connection.sock.calls == [("send", data), ("settimeout", 3.0), ("sendall", data[10:]), ("setblocking", False)]
