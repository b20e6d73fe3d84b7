"""Generated Mobiletech exports for the import tests (R-MT-19/20): N readers, each with a number,
the keyword SMS that started a recurring SMS subscription, its billed reply and payment, one
renewal push with its payment, the recurrent profile, and every fourth reader a free info SMS.
A chosen share of readers gets one broken row of a rule (cycling through ``KINDS``); the export
knows which rows the import must skip and which report lines (table, key, rule) it must print."""

from __future__ import annotations

import copy
import csv
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path
from zoneinfo import ZoneInfo

from masthead.mobiletech.importer import TABLES

BASE = datetime(2024, 1, 1, 8, 0, tzinfo=UTC)
LOCAL_TIME = ZoneInfo("Europe/Bratislava")
TEMPLATES = [
    {"code": "bought", "body": "Thanks! {{ subscription_name }} is yours.", "description": "billed reply"},
    {"code": "renewal", "body": "Renewed: {{ subscription_name }} for {{ price }} EUR.", "description": "push"},
    {"code": "info", "body": "Info: {{ original_message }}", "description": "free reply"},
]
BILLING_KEYS = [{"code": "FREE", "amount": "0.00", "description": "free"},
                {"code": "BK2", "amount": "2.00", "description": "2 EUR"},
                {"code": "BK4", "amount": "4.00", "description": "4 EUR"}]
KEYS = {"users": "id", "phone_numbers": "phone_number", "templates": "code", "billing_keys": "code",
        "inbound_messages": "mobiletech_id", "payments": "id", "outbound_messages": "mobiletech_id",
        "recurrent_payments": "cid"}
#: one kind of broken row per rule; each mutates one reader's rows (see ``_break``)
KINDS = ("invalid_email", "duplicate_user", "phone_not_local", "phone_not_unique", "recurrent_cid_unknown",
         "recurrent_no_outbound", "recurrent_no_payment", "outbound_rcv_msg_unknown", "payment_not_linked_d1",
         "payment_amount_mismatch", "payment_meta_missing", "payment_billkey_mismatch", "missing_template",
         "unknown_billkey", "unknown_user", "unknown_payment", "duplicate_inbound", "duplicate_outbound",
         "duplicate_payment", "duplicate_recurrent")
NEEDS_FREE = {"outbound_rcv_msg_unknown", "missing_template", "unknown_billkey", "unknown_user"}
INTEGER_COLUMNS = {"content_length", "expiration", "retries"}


def iso(value: datetime) -> str:
    return value.isoformat()


@dataclass
class Export:
    tables: dict[str, list[dict]]
    expected: Counter = field(default_factory=Counter)  # (table, key, rule) → times reported
    skipped: Counter = field(default_factory=Counter)  # table → rows the import must skip
    broken_users: dict[str, str] = field(default_factory=dict)  # user id → kind

    def imported(self, table: str) -> int:
        return len(self.tables[table]) - self.skipped[table]

    def write(self, directory: Path, fmt: str = "csv") -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        for table in TABLES:
            rows = self.tables[table]
            if fmt == "json":
                # JSON exports carry numbers and objects where a database dump would
                data = [{k: (int(v) if k in INTEGER_COLUMNS and v.isdigit() else
                             json.loads(v) if k == "value" and v.startswith("{") else v)
                         for k, v in row.items()} for row in rows]
                (directory / f"{table}.json").write_text(json.dumps(data), encoding="utf-8")
                continue
            columns = list(dict.fromkeys(k for row in rows for k in row))
            with (directory / f"{table}.csv").open("w", newline="", encoding="utf-8") as fh:
                writer = csv.DictWriter(fh, fieldnames=columns or ["id"], restval="")
                writer.writeheader()
                writer.writerows(rows)
        return directory


class _Reader:
    """One reader's rows before they go into the tables."""

    def __init__(self, i: int, source_ids, free: bool):
        self.i = i
        self.ref = f"u{i:05d}"
        self.number = f"0908{i:06d}"
        self.international = f"+421908{i:06d}"
        self.extra: list[tuple[str, dict]] = []
        at = BASE + timedelta(minutes=i)
        self.user = {"id": self.ref, "email": "" if i % 3 == 0 else f"reader{i}@example.com",
                     "first_name": f"Reader{i}", "last_name": "Test", "public_name": "", "locale": "sk",
                     "password_hash": "$2y$10$abcdefghijklmnopqrstuuE8xX8m5G3dOq7o3K9a8gJmQ7c0R1hTe" if i % 5 == 0
                     else "", "created_at": iso(at - timedelta(days=30))}
        self.phone = {"phone_number": self.number, "user_id": self.ref}
        self.mo1 = self._inbound(next(source_ids), f"mo-{i}-1", "WEB", at, mobiletech_date=i % 2 == 0)
        self.p1 = self._payment(f"p-{i}-1", "4.00", at + timedelta(minutes=1))
        self.p1_meta = self._meta(self.p1, "BK4", self.mo1["id"], "bought")
        self.mt1 = self._outbound(f"mt-{i}-1", "bought", "BK4", self.mo1["mobiletech_id"], self.p1["id"], at)
        self.mt1_statuses = self._statuses(self.mt1, ["A0", "D1"], at)
        renewal = at + timedelta(days=30)
        self.p2 = self._payment(f"p-{i}-2", "4.00", renewal + timedelta(minutes=1))
        self.p2_meta = self._meta(self.p2, "BK4", self.mo1["id"], "renewal")
        self.mt2 = self._outbound(f"mt-{i}-2", "renewal", "BK4", "", self.p2["id"], renewal)
        self.mt2_statuses = self._statuses(self.mt2, ["A0", "D1"], renewal)
        self.rec = {"cid": self.mo1["mobiletech_id"], "user_id": self.ref,
                    "charge_at": iso(renewal + timedelta(days=30)), "subscription_type": "sms_month"}
        self.mo2 = self.mt3 = None
        self.mt3_statuses: list[dict] = []
        if free:
            self.mo2 = self._inbound(next(source_ids), f"mo-{i}-2", "INFO", at + timedelta(days=2))
            self.mt3 = self._outbound(f"mt-{i}-3", "info", "FREE", self.mo2["mobiletech_id"], "",
                                      at + timedelta(days=2))
            self.mt3_statuses = self._statuses(self.mt3, ["D1"], at + timedelta(days=2))

    def _inbound(self, source_id: int, mobiletech_id: str, content: str, at: datetime, mobiletech_date=False) -> dict:
        local = at.astimezone(LOCAL_TIME)  # Mobiletech's receive_date is local time
        return {"id": str(source_id), "mobiletech_id": mobiletech_id, "serv_id": "42", "project_id": "7",
                "from": self.international, "to": "8866", "content": content, "content_coding": "text", "dcs": "0",
                "esm": "0", "operator_type": "O", "user_id": self.ref,
                "receive_date": local.strftime("%y%m%d%H%M%S") + "0" if mobiletech_date else iso(at),
                "created_at": iso(at)}

    def _payment(self, ref: str, amount: str, paid_at: datetime) -> dict:
        return {"id": ref, "user_id": self.ref, "amount": amount, "status": "paid", "gateway": "mobiletech_recurrent",
                "subscription_type": "sms_month", "paid_at": iso(paid_at), "created_at": iso(paid_at)}

    @staticmethod
    def _meta(payment: dict, billkey: str, inbound_source_id: str, template: str) -> list[dict]:
        return [{"payment_id": payment["id"], "key": key, "value": value} for key, value in (
            ("mobiletech_billkey", billkey), ("mobiletech_inbound_message_id", inbound_source_id),
            ("mobiletech_template_code", template), ("mobiletech_template_params", '{"subscription_name": "SMS"}'))]

    def _outbound(self, ref: str, template: str, billkey: str, rcv: str, payment: str, at: datetime) -> dict:
        return {"mobiletech_id": ref, "user_id": self.ref, "template_code": template, "status": "D1",
                "serv_id": "42", "project_id": "7" if rcv else "", "rcv_msg_id": rcv, "from": "8866",
                "to": self.international, "billmsisdn": "", "billkey": billkey, "payment_id": payment,
                "content_length": "40", "expiration": "100" if rcv else "600", "dcs": "0", "esm": "0",
                "operator_type": "O", "created_at": iso(at), "sent_at": iso(at + timedelta(seconds=1))}

    @staticmethod
    def _statuses(outbound: dict, codes: list[str], at: datetime) -> list[dict]:
        return [{"outbound_mobiletech_id": outbound["mobiletech_id"], "status": code,
                 "created_at": iso(at + timedelta(seconds=10 * (n + 1)))} for n, code in enumerate(codes)]

    def rows(self) -> list[tuple[str, dict]]:
        """Every row in table order; extra rows (duplicates, strays) right after the reader's own."""
        own = [("users", self.user), ("phone_numbers", self.phone), ("inbound_messages", self.mo1)]
        own += [("inbound_messages", self.mo2)] if self.mo2 else []
        for payment, meta in ((self.p1, self.p1_meta), (self.p2, self.p2_meta)):
            if payment is not None:
                own += [("payments", payment)] + [("payment_meta", m) for m in meta]
        for outbound, history in ((self.mt1, self.mt1_statuses), (self.mt2, self.mt2_statuses),
                                  (self.mt3, self.mt3_statuses)):
            if outbound is not None:
                own += [("outbound_messages", outbound)] + [("outbound_statuses", s) for s in history]
        own += [("recurrent_payments", self.rec)]
        return own + self.extra

    def everything_but(self, root: dict) -> list[tuple[str, dict, str | None]]:
        """Every other row of the reader as a dependant of a skipped root."""
        return [(table, row, None if table in ("payment_meta", "outbound_statuses") else "broken_dependency")
                for table, row in self.rows() if row is not root]


def _p2_broken(r: _Reader, rule: str) -> list[tuple[str, dict, str | None]]:
    """The renewal payment breaks a rule: it, its meta, its push and the push's reports are skipped."""
    return ([("payments", r.p2, rule), ("outbound_messages", r.mt2, "broken_dependency")]
            + [("payment_meta", m, None) for m in r.p2_meta] + [("outbound_statuses", s, None) for s in r.mt2_statuses])


def _break(r: _Reader, kind: str) -> list[tuple[str, dict, str | None]]:
    """Mutate reader ``r`` for ``kind``; the rows the import must skip with the rule it must report
    (None: skipped without a line of its own)."""
    i = r.i
    if kind == "invalid_email":
        r.user["email"] = f"reader{i}@@example"
        return [("users", r.user, "invalid_email")] + r.everything_but(r.user)
    if kind == "duplicate_user":
        r.user["email"] = r.user["email"] or f"reader{i}@example.com"
        twin = {"id": f"{r.ref}-twin", "email": r.user["email"].upper()}
        phone = {"phone_number": f"0907{i:06d}", "user_id": twin["id"]}
        inbound = {"mobiletech_id": f"mo-{i}-twin", "from": f"+421907{i:06d}", "to": "8866", "content": "HI",
                   "user_id": twin["id"]}
        r.extra += [("users", twin), ("phone_numbers", phone), ("inbound_messages", inbound)]
        return [("users", twin, "duplicate_user"), ("phone_numbers", phone, "broken_dependency"),
                ("inbound_messages", inbound, "broken_dependency")]
    if kind == "phone_not_local":
        r.phone["phone_number"] = r.international
        return [("phone_numbers", r.phone, "phone_not_local")]
    if kind == "phone_not_unique":  # the previous reader's number (earlier in the file), a second one for r
        stray = {"phone_number": f"0908{i - 1:06d}", "user_id": r.ref}
        r.extra.append(("phone_numbers", stray))
        return [("phone_numbers", stray, "phone_not_unique")]
    if kind == "recurrent_cid_unknown":
        r.rec["cid"] = f"mo-{i}-ghost"
        return [("recurrent_payments", r.rec, "recurrent_cid_unknown")]
    if kind == "recurrent_no_outbound":  # a keyword SMS nobody answered
        lonely = r._inbound(900_000 + i, f"mo-{i}-3", "WEB", BASE + timedelta(days=3))
        r.extra.append(("inbound_messages", lonely))
        r.rec["cid"] = lonely["mobiletech_id"]
        return [("recurrent_payments", r.rec, "recurrent_no_outbound")]
    if kind == "recurrent_no_payment":  # the reply to the cid was free and no payment exists
        r.mt1.update(billkey="FREE", payment_id="")
        r.p1 = r.p2 = r.mt2 = None
        r.mt2_statuses = []
        return [("recurrent_payments", r.rec, "recurrent_no_payment")]
    if kind == "outbound_rcv_msg_unknown":
        r.mt3["rcv_msg_id"] = f"mo-{i}-gone"
        return [("outbound_messages", r.mt3, kind)] + [("outbound_statuses", s, None) for s in r.mt3_statuses]
    if kind == "payment_not_linked_d1":
        r.mt2["status"] = "A1"
        for s in r.mt2_statuses:
            s["status"] = "A1"
        return _p2_broken(r, kind)
    if kind == "payment_amount_mismatch":
        r.p2["amount"] = "3.00"
        return _p2_broken(r, kind)
    if kind == "payment_meta_missing":
        r.p2_meta.pop()  # mobiletech_template_params
        return _p2_broken(r, kind)
    if kind == "payment_billkey_mismatch":
        r.p2_meta[0]["value"] = "BK2"
        return _p2_broken(r, kind)
    if kind == "missing_template":
        r.mt3["template_code"] = "gone"
        return [("outbound_messages", r.mt3, kind)] + [("outbound_statuses", s, None) for s in r.mt3_statuses]
    if kind == "unknown_billkey":
        r.mt3["billkey"] = "ZZ9"
        return [("outbound_messages", r.mt3, kind)] + [("outbound_statuses", s, None) for s in r.mt3_statuses]
    if kind == "unknown_user":
        r.mo2["user_id"] = f"u-ghost-{i}"
        return ([("inbound_messages", r.mo2, kind), ("outbound_messages", r.mt3, "broken_dependency")]
                + [("outbound_statuses", s, None) for s in r.mt3_statuses])
    if kind == "unknown_payment":
        r.mt2["payment_id"] = f"p-ghost-{i}"
        return ([("outbound_messages", r.mt2, kind), ("payments", r.p2, "payment_not_linked_d1")]
                + [("payment_meta", m, None) for m in r.p2_meta] + [("outbound_statuses", s, None)
                                                                     for s in r.mt2_statuses])
    twins = {"duplicate_inbound": ("inbound_messages", r.mo1), "duplicate_outbound": ("outbound_messages", r.mt1),
             "duplicate_payment": ("payments", r.p1), "duplicate_recurrent": ("recurrent_payments", r.rec)}
    table, original = twins[kind]
    twin = copy.deepcopy(original)
    if table == "inbound_messages":
        twin["id"] = str(800_000 + i)
    r.extra.append((table, twin))
    return [(table, twin, kind)]


def generate(n_users: int, broken_fraction: float = 0.0, kinds: tuple[str, ...] = KINDS, start: int = 0) -> Export:
    """``n_users`` readers numbered from ``start``; every ``1/broken_fraction``-th reader (never reader 0)
    gets one broken row, the kinds taken in turn from ``kinds``."""
    step = round(1 / broken_fraction) if broken_fraction else 0
    tables: dict[str, list[dict]] = defaultdict(list)
    tables["templates"] = copy.deepcopy(TEMPLATES)
    tables["billing_keys"] = copy.deepcopy(BILLING_KEYS)
    export = Export(tables=tables)
    source_ids = count(1)
    broken_seen = 0
    for i in range(start, start + n_users):
        kind = None
        if step and i % step == step - 1:
            kind = kinds[broken_seen % len(kinds)]
            broken_seen += 1
        reader = _Reader(i, source_ids, free=i % 4 == 0 or kind in NEEDS_FREE)
        marks = _break(reader, kind) if kind else []
        if kind:
            export.broken_users[reader.ref] = kind
        for table, row in reader.rows():
            tables[table].append(row)
        for table, row, rule in marks:
            export.skipped[table] += 1
            if rule is not None:
                export.expected[(table, row[KEYS[table]], rule)] += 1
    for table in TABLES:
        tables.setdefault(table, [])
    export.tables = dict(tables)
    return export
