"""The Mobiletech webhook (R-MT-1..3): XML in, XML out.

``receive`` stores the message once (idempotent on its id) and answers ``rcv_rsp`` at once, the
handling runs in the background; ``status`` stores a delivery report and answers ``status_rsp``;
an unknown outbound id answers 404. Bodies are parsed by defusedxml with a size cap: a DTD, an
entity (expansion bomb or external) or malformed XML answers 400 and writes nothing, as do an
unknown command and missing fields. Optional shared secret (``?secret=`` or ``X-Webhook-Secret``)
and source-address allowlist.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from xml.sax.saxutils import escape

from defusedxml import DefusedXmlException
from defusedxml import ElementTree
from django.conf import settings
from django.http import HttpResponse
from ninja import Router

from masthead.core.api import client_ip, route
from masthead.mobiletech import services
from masthead.users.services import ip_allowed

logger = logging.getLogger(__name__)
router = Router(tags=["mobiletech"])
XML = "application/xml; charset=utf-8"
LIMITS = {"id": 100, "serv_id": 50, "project_id": 50, "from": 20, "to": 20, "content": 2000, "content_coding": 20,
          "dcs": 20, "esm": 20, "operator_type": 5, "receive_date": 20, "status": 30}


def _xml(command: str, inner: str, status: int = 200) -> HttpResponse:
    body = f'<?xml version="1.0" encoding="UTF-8"?>\n<message command="{command}">{inner}</message>'
    return HttpResponse(body.encode(), status=status, content_type=XML)


def _refuse(reason: str, status: int = 400) -> HttpResponse:
    return _xml("error", f"<reason>{escape(reason)}</reason>", status)


class Refused(Exception):
    def __init__(self, reason: str, status: int = 400):
        super().__init__(reason)
        self.reason, self.status = reason, status


def _fields(root, required: tuple[str, ...]) -> dict[str, str]:
    values = {}
    for name, limit in LIMITS.items():
        text = root.findtext(name)
        if text is None:
            continue
        text = text.strip() if name != "content" else text
        if len(text) > limit or "\x00" in text:
            raise Refused(f"field {name} is too long or holds a NUL character")
        values[name] = text
    missing = [name for name in required if not values.get(name)]
    if missing:
        raise Refused(f"missing field: {', '.join(missing)}")
    return values


def _authorised(request) -> bool:
    secret = settings.MOBILETECH_WEBHOOK_SECRET
    if secret:
        given = request.GET.get("secret") or request.headers.get("X-Webhook-Secret") or ""
        if not hmac.compare_digest(given.encode(), secret.encode()):
            return False
    allowed = settings.MOBILETECH_ALLOWED_IPS.strip()
    return not allowed or ip_allowed(allowed, client_ip(request))


def _receive(values: dict[str, str]) -> HttpResponse:
    content = values.get("content", "")
    if values.get("content_coding") == "base64":
        try:
            content = base64.b64decode(content, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise Refused("content is not valid base64 UTF-8") from exc
    services.receive(
        mobiletech_id=values["id"], phone_from=values["from"], phone_to=values.get("to", ""), content=content,
        serv_id=values.get("serv_id", ""), project_id=values.get("project_id", ""),
        content_coding=values.get("content_coding", ""), dcs=values.get("dcs", ""), esm=values.get("esm", ""),
        operator_type=values.get("operator_type", ""),
        receive_date=services.parse_receive_date(values.get("receive_date", "")))
    return _xml("rcv_rsp", f"<id>{escape(values['id'])}</id>")


def _status(values: dict[str, str]) -> HttpResponse:
    try:
        services.record_status(mobiletech_id=values["id"], status=values["status"])
    except services.UnknownOutbound:
        logger.warning("mobiletech status for unknown outbound id %s", values["id"])
        return HttpResponse(status=404)
    return _xml("status_rsp", f"<id>{escape(values['id'])}</id>")


@route(router, "POST", "/mobiletech/webhook", operation_id="mobiletech_webhook", auth=None,
       response={200: None, 400: None, 403: None, 404: None},
       openapi_extra={"requestBody": {"required": True, "content": {"application/xml": {"schema": {"type": "string"}}}}},
       summary="Mobiletech callbacks: receive (an inbound SMS) and status (a delivery report), XML")
def webhook(request):
    if not _authorised(request):
        return _refuse("not authorised", 403)
    raw = request.body
    if len(raw) > settings.MOBILETECH_MAX_BODY_BYTES:
        return _refuse("body too large")
    try:
        root = ElementTree.fromstring(raw, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except (ElementTree.ParseError, DefusedXmlException, ValueError) as exc:
        return _refuse(f"malformed XML: {type(exc).__name__}")
    try:
        if root.tag != "message":
            raise Refused("the root element must be <message>")
        command = root.get("command", "")
        if command == "receive":
            return _receive(_fields(root, ("id", "from")))
        if command == "status":
            return _status(_fields(root, ("id", "status")))
        raise Refused(f"unknown command: {command[:40]}")
    except Refused as exc:
        return _refuse(exc.reason, exc.status)
