"""Clients that hand an outbound message to Mobiletech (R-MT-7, R-MT-17): ``mock`` (default) and
``http``. Chosen by ``MOBILETECH_CLIENT``."""

from __future__ import annotations

import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from xml.sax.saxutils import escape

from defusedxml import ElementTree
from django.conf import settings


class ClientError(Exception):
    pass


@dataclass(frozen=True)
class Answer:
    mobiletech_id: str
    dcs: str = "0"
    esm: str = "0"
    status: str = ""  # a status known at once (the mock's D1)


class MockClient:
    """Records nothing remotely: a random id, and the message counts as delivered (D1) at once."""

    def send(self, row) -> Answer:
        return Answer(mobiletech_id=str(uuid.uuid4()), dcs="mock", esm="mock", status="D1")


def send_xml(row) -> bytes:
    fields = [("serv_id", row.serv_id), ("project_id", row.project_id), ("rcv_msg_id", row.rcv_msg_id),
              ("from", row.phone_from), ("to", row.phone_to), ("billkey", row.billkey), ("content", row.content),
              ("content_coding", "text"), ("esm", "0"), ("dcs", "0"), ("expiration", str(row.expiration)),
              ("operator_type", row.operator_type)]
    inner = "".join(f"<{name}>{escape(value or '')}</{name}>" for name, value in fields)
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<message command="send">{inner}</message>'.encode()


class HttpClient:
    """The XML ``send`` command to ``MOBILETECH_GATEWAY_URL``; the answer's ``<id>`` is the message's id."""

    def send(self, row) -> Answer:
        if not settings.MOBILETECH_GATEWAY_URL:
            raise ClientError("MOBILETECH_GATEWAY_URL is not configured")
        request = urllib.request.Request(settings.MOBILETECH_GATEWAY_URL, data=send_xml(row), method="POST", headers={
            "Content-Type": "text/xml; charset=UTF-8", "Authorization": f"Bearer {settings.MOBILETECH_TOKEN}"})
        try:
            with urllib.request.urlopen(request, timeout=settings.MOBILETECH_TIMEOUT_SECONDS) as response:
                body = response.read(65536)
        except (OSError, ValueError) as exc:
            raise ClientError(f"{type(exc).__name__}: {exc}") from exc
        try:
            found = ElementTree.fromstring(body).findtext("id")
        except Exception as exc:  # defusedxml raises its own errors for entities too
            raise ClientError(f"unreadable answer: {body[:200]!r}") from exc
        if not found:
            raise ClientError(f"answer without an id: {body[:200]!r}")
        return Answer(mobiletech_id=found.strip()[:100])


CLIENTS = {"mock": MockClient, "http": HttpClient}


def current():
    try:
        return CLIENTS[settings.MOBILETECH_CLIENT]()
    except KeyError:
        raise ClientError(f"unknown MOBILETECH_CLIENT {settings.MOBILETECH_CLIENT!r}") from None
