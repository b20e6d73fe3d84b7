"""Import an existing Mobiletech installation (R-MT-19, integrity checks R-MT-20):
``masthead import mobiletech DIR [--format csv|json] [--dry-run] [--report FILE]``.

The export
==========
A directory with one file per table, all in one format: ``<table>.csv`` (UTF-8, a header line,
comma separated, ``""`` quoting) or ``<table>.json`` (a JSON array of flat objects; a number is
read as its text, ``null`` as the empty string, an object or array as its JSON text). A missing
file is an empty table; unknown columns are ignored; the export is read into memory whole. Rows refer to each other by the
*external* ids of the old system (``user_id`` is always the old system's user id), never by
Masthead's primary keys. Times are ISO 8601 (``2024-05-06T12:00:00+02:00``) or
``YYYY-MM-DD HH:MM:SS`` (a time without offset is in ``settings.TIME_ZONE``); ``receive_date``
may also be Mobiletech's ``yyMMddHHmmss`` + tenths. Columns marked * are required.

``users``
    ``id``* (external user id), ``email`` (may be empty: the reader gets the placeholder
    ``<local number>@sms.invalid`` from their phone number, else ``user-<id>@sms.invalid``, as
    ``services._reader_for`` names readers who text in), ``public_name`` (default: the number; a
    reader with a placeholder e-mail and no number: the external id), ``first_name``, ``last_name``, ``locale`` (``en``/``sk``), ``password_hash``
    (a PHP bcrypt ``$2y$`` hash, verified and rehashed on first login), ``created_at``.
``phone_numbers`` (``mobiletech_phone_numbers``)
    ``phone_number``* (local ``09xxxxxxxx``), ``user_id``*.
``templates`` (``mobiletech_templates``)
    ``code``*, ``body``* (Twig-like text, checked by the SMS sandbox), ``description``.
``billing_keys``
    ``code``*, ``amount``* (``4.00``), ``description``. Optional: keys already in the catalog
    (``masthead catalog load``) need no row; the catalog's amount wins over the file's.
``inbound_messages`` (``mobiletech_inbound_messages``)
    ``id`` (the old row id, which payment meta ``mobiletech_inbound_message_id`` refers to),
    ``mobiletech_id``* (the ``id`` of ``receive``), ``serv_id``, ``project_id``, ``from``*
    (international ``+421…``), ``to`` (short number), ``content``, ``content_coding``, ``dcs``,
    ``esm``, ``operator_type``, ``receive_date``, ``user_id`` (empty: the owner of the number, as
    the webhook links it), ``created_at``.
``payments`` (only successful ones)
    ``id``*, ``user_id``*, ``amount``*, ``status`` (empty or ``paid``), ``gateway``
    (``mobiletech_recurrent``, the default, or ``mobiletech``), ``subscription_type`` (a
    subscription type code), ``paid_at``, ``created_at``.
``payment_meta``
    ``payment_id``*, ``key``*, ``value``. Each payment needs ``mobiletech_billkey``,
    ``mobiletech_inbound_message_id`` (the inbound's old ``id``, or its ``mobiletech_id``; stored
    as Masthead's inbound row id, R-MT-10), ``mobiletech_template_code`` and
    ``mobiletech_template_params`` (a JSON object; ``{}`` will do).
``outbound_messages`` (``mobiletech_outbound_messages``)
    ``mobiletech_id``* (the id of the gateway's answer), ``template_code``, ``status`` (the last
    ``status`` report; empty: the last row of ``outbound_statuses``), ``serv_id``,
    ``project_id``, ``rcv_msg_id`` (the ``mobiletech_id`` of the inbound it answers; empty for
    a push), ``from`` (short number), ``to``*, ``billmsisdn``, ``billkey``, ``payment_id`` (the
    payment this billed message charged), ``content_length``, ``expiration``, ``dcs``, ``esm``,
    ``operator_type``, ``user_id`` (empty: the owner of the number), ``created_at``, ``sent_at``.
``outbound_statuses`` (the delivery-report history)
    ``outbound_mobiletech_id``*, ``status``*, ``created_at``.
``recurrent_payments``
    ``cid``* (the ``mobiletech_id`` of the inbound that started the chain), ``user_id``*,
    ``charge_at``* (the next charge), ``subscription_type`` (code; default: the parent payment's),
    ``parent_payment_id`` (default: the reader's last successful premium SMS payment; a payment
    parents one profile only), ``retries`` (default 4).

What is written (R-MT-19)
=========================
In dependency order, each table in chunks (``--chunk-size``, one transaction per chunk, bulk
inserts): users (source ``import:mobiletech``; their external id in ``UserMeta``
``mobiletech_import_id``; an e-mail that already names a Masthead account links that account
instead of creating one), phone numbers, templates, billing keys, inbound messages (marked
processed, so no keyword handler runs for history), payments (status ``paid``, one item, the
meta above plus ``mobiletech_import_id``; no subscription is made), outbound messages with their
status history, recurrent payments (gateway ``mobiletech_recurrent``, state ``active``,
``retries`` 4, no ``payment``/``expires``). No event is emitted: history sends no receipts.

The rows are inserted with one prepared statement per chunk and table (``executemany``; on
PostgreSQL with ``RETURNING`` for the new ids, and an ``ANALYZE`` of each table loaded so the key
lookups of the next chunk and the next run use the indexes), which keeps the export's times
(``created_at`` of messages and payments) instead of the import's. A chunk that clashes with a row
written meanwhile (a live webhook) stops the import with an error; the chunks before it are kept.

Idempotent: a row whose key is already in the database (external id for users and payments,
number, code, ``mobiletech_id``, ``cid``) counts as *existing* and is left unchanged (a later
export never updates a row), so a second run changes nothing; a run that stopped half-way is finished by running it again. With
``--dry-run`` everything runs inside one transaction that is rolled back: every check and count
is real, nothing is kept.

The report
==========
Every row that breaks a rule is reported (table, row number within its file, its key, rule,
detail) and not imported; rows that depend on a skipped row are skipped and reported with rule
``broken_dependency``. Meta and status rows of a skipped payment/outbound message are counted as
skipped without a line of their own. Rules: R-MT-20 ``recurrent_cid_unknown``,
``recurrent_no_outbound``, ``recurrent_no_payment`` (no billed reply with a payment on the cid,
or no successful payment to be the parent, R-MT-11/19), ``outbound_rcv_msg_unknown``,
``payment_not_linked_d1``, ``payment_amount_mismatch``, ``payment_billkey_mismatch``,
``payment_meta_missing``, ``phone_not_local``, ``phone_not_unique``, ``duplicate_user``; and
``missing_field``, ``invalid_value``, ``invalid_email``, ``unknown_user``, ``unknown_inbound``,
``unknown_payment``, ``unknown_outbound``, ``unknown_gateway``, ``unknown_subscription_type``,
``unknown_billkey``, ``missing_template``, ``invalid_template``, ``payment_not_paid``,
``duplicate_template``, ``duplicate_billkey``, ``duplicate_inbound``, ``duplicate_payment``,
``duplicate_meta``, ``duplicate_outbound``, ``duplicate_recurrent``, ``broken_dependency``.
A paid payment counts as linked to a delivered message when an outbound row names it with status
``D1`` (or ``D0`` on O2, R-MT-4). Per table the totals: rows, imported, linked (users), existing,
skipped.
"""

from __future__ import annotations

import contextlib
import csv
import json
import re
import secrets
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import TextIO

from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import DEFAULT_DB_ALIAS, IntegrityError, connections, models, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from masthead.core.money import InvalidAmount, to_money
from masthead.messaging import templates as sandbox
from masthead.mobiletech import numbers, statuses
from masthead.mobiletech.models import (
    BillingKey,
    InboundMessage,
    OutboundMessage,
    OutboundStatus,
    PhoneNumber,
    Template,
)
from masthead.payments.models import (
    Payment,
    PaymentGateway,
    PaymentItem,
    PaymentMeta,
    RecurrentPayment,
)
from masthead.subscriptions.models import SubscriptionType
from masthead.users.models import LEGACY_BCRYPT_PREFIXES, User, UserMeta

TABLES = ("users", "phone_numbers", "templates", "billing_keys", "inbound_messages", "payments", "payment_meta",
          "outbound_messages", "outbound_statuses", "recurrent_payments")
FORMATS = ("csv", "json")
IMPORT_KEY = "mobiletech_import_id"  # UserMeta / PaymentMeta key holding the external id
SOURCE = "import:mobiletech"
GATEWAY, RECURRENT_GATEWAY = "mobiletech", "mobiletech_recurrent"
PAYMENT_META = ("mobiletech_billkey", "mobiletech_inbound_message_id", "mobiletech_template_code",
                "mobiletech_template_params")
RETRIES = 4
REQUIRED = {
    "users": ("id",), "phone_numbers": ("phone_number", "user_id"), "templates": ("code", "body"),
    "billing_keys": ("code", "amount"), "inbound_messages": ("mobiletech_id", "from"),
    "payments": ("id", "user_id", "amount"), "payment_meta": ("payment_id", "key"),
    "outbound_messages": ("mobiletech_id", "to"), "outbound_statuses": ("outbound_mobiletech_id", "status"),
    "recurrent_payments": ("cid", "user_id", "charge_at"),
}
DUPLICATE_RULE = {
    "users": "duplicate_user", "phone_numbers": "phone_not_unique", "templates": "duplicate_template",
    "billing_keys": "duplicate_billkey", "inbound_messages": "duplicate_inbound", "payments": "duplicate_payment",
    "payment_meta": "duplicate_meta", "outbound_messages": "duplicate_outbound",
    "recurrent_payments": "duplicate_recurrent",
}
NOUN = {"users": "user", "templates": "template", "billing_keys": "billing key", "inbound_messages": "inbound message",
        "payments": "payment"}
#: rows that belong to a row of another table: skipped silently with it
ATTRIBUTE_TABLES = {"payment_meta": "payments", "outbound_statuses": "outbound_messages"}
UNSTRIPPED = {"content", "body", "value", "description"}
SLUG = re.compile(r"^[-a-zA-Z0-9_]{1,100}$")
IN_CHUNK = 500  # values per ``__in`` lookup
DEFAULT_LOCALE = User._meta.get_field("locale").default


class ImportProblem(Exception):
    """The import cannot go on: the export cannot be read (nothing was written), or a chunk clashed
    with rows written meanwhile (the chunks before it are kept; a second run finishes the import)."""


# --- the report --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Violation:
    table: str
    row: int
    ref: str
    rule: str
    detail: str


@dataclass
class ImportReport:
    directory: str
    format: str
    dry_run: bool
    counts: dict[str, Counter] = field(default_factory=dict)
    violations: list[Violation] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def imported(self) -> int:
        return sum(c["imported"] + c["linked"] for c in self.counts.values())

    def rules(self) -> Counter:
        return Counter(v.rule for v in self.violations)

    def as_dict(self) -> dict:
        return {"directory": self.directory, "format": self.format, "dry_run": self.dry_run,
                "totals": {table: dict(self.counts[table]) for table in TABLES},
                "rules": dict(sorted(self.rules().items())),
                "violations": [v.__dict__ for v in self.violations],
                "seconds": {k: round(v, 3) for k, v in self.seconds.items()}}

    def write(self, path: str | Path) -> None:
        """The whole report: CSV (one violation a line) when the name ends in ``.csv``, else JSON."""
        path = Path(path)
        if path.suffix.lower() == ".csv":
            with path.open("w", newline="", encoding="utf-8") as fh:
                writer = csv.writer(fh)
                writer.writerow(["table", "row", "ref", "rule", "detail"])
                writer.writerows([v.table, v.row, v.ref, v.rule, v.detail] for v in self.violations)
        else:
            path.write_text(json.dumps(self.as_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    def summary(self, limit: int | None = None) -> str:
        title = "Mobiletech import" + (" (dry run: nothing was written)" if self.dry_run else "")
        lines = [f"{title} from {self.directory} ({self.format})",
                 f"{'table':<20}{'rows':>8}{'imported':>10}{'linked':>8}{'existing':>10}{'skipped':>9}"]
        for table in TABLES:
            c = self.counts[table]
            lines.append(f"{table:<20}{c['rows']:>8}{c['imported']:>10}{c['linked']:>8}{c['existing']:>10}"
                         f"{c['skipped']:>9}")
        lines.append(f"new rows: {self.imported}; violations: {len(self.violations)}"
                     + (f" ({', '.join(f'{rule} {n}' for rule, n in sorted(self.rules().items()))})"
                        if self.violations else ""))
        shown = self.violations if limit is None else self.violations[:limit]
        lines += [f"  {v.table} row {v.row} {v.ref}: {v.rule}: {v.detail}" for v in shown]
        if len(shown) < len(self.violations):
            lines.append(f"  … and {len(self.violations) - len(shown)} more (see the report file)")
        lines.append("seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in self.seconds.items()))
        return "\n".join(lines)


class Progress:
    """A text progress bar on a stream (stderr): redrawn in place on a terminal, a line per step otherwise."""

    WIDTH = 30

    def __init__(self, stream: TextIO | None):
        self.stream = stream
        self.tty = bool(stream is not None and getattr(stream, "isatty", lambda: False)())

    def show(self, label: str, done: int, total: int) -> None:
        if self.stream is None:
            return
        filled = self.WIDTH if total == 0 else self.WIDTH * done // total
        text = f"{label:<20} [{'#' * filled}{'.' * (self.WIDTH - filled)}] {done}/{total}"
        if self.tty:
            self.stream.write("\r" + text + ("\n" if done >= total else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


# --- reading ---------------------------------------------------------------------------------------------


def detect_format(directory: Path) -> str:
    for fmt in FORMATS:
        if any((directory / f"{table}.{fmt}").exists() for table in TABLES):
            return fmt
    raise ImportProblem(f"no export files in {directory} (expected e.g. users.csv or users.json)")


def _text(value, column: str) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    text = str(value)
    return text if column in UNSTRIPPED else text.strip()


def read_export(directory: str | Path, fmt: str | None = None) -> tuple[str, dict[str, list[dict]]]:
    """The export's tables as lists of ``{column: text}``."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ImportProblem(f"not a directory: {directory}")
    fmt = fmt or detect_format(directory)
    if fmt not in FORMATS:
        raise ImportProblem(f"unknown format {fmt!r} (csv or json)")
    tables = {}
    for table in TABLES:
        path = directory / f"{table}.{fmt}"
        if not path.exists():
            tables[table] = []
            continue
        try:
            if fmt == "csv":
                with path.open(newline="", encoding="utf-8-sig") as fh:
                    records = list(csv.DictReader(fh))
            else:
                records = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, csv.Error) as exc:
            raise ImportProblem(f"{path}: {exc}") from exc
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise ImportProblem(f"{path}: expected a list of objects")
        tables[table] = [{str(k).strip(): _text(v, str(k).strip()) for k, v in r.items() if k is not None}
                         for r in records]
    return fmt, tables


# --- parsing helpers --------------------------------------------------------------------------------------


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def parse_time(raw: str) -> datetime | None:
    """ISO 8601 / ``YYYY-MM-DD HH:MM:SS`` (local time without an offset) or Mobiletech's
    ``yyMMddHHmmss[t]``; ValueError when it is none of them."""
    raw = (raw or "").strip()
    if not raw:
        return None
    if raw.isdigit() and len(raw) in (12, 13):
        naive = datetime.strptime(raw[:12], "%y%m%d%H%M%S")
        if len(raw) == 13:
            naive = naive.replace(microsecond=int(raw[12]) * 100_000)
        return timezone.make_aware(naive)
    value = parse_datetime(raw.replace(" ", "T", 1) if len(raw) > 10 else raw + "T00:00:00")
    if value is None:
        raise ValueError(f"not a time: {raw!r}")
    return value if timezone.is_aware(value) else timezone.make_aware(value)


def _in_lookup(queryset, column: str, values: Iterable, *fields: str) -> list[tuple]:
    values = sorted({v for v in values if v})
    found = []
    for chunk in _chunks(values, IN_CHUNK):
        found += list(queryset.filter(**{f"{column}__in": chunk}).values_list(*fields))
    return found


@dataclass(eq=False, slots=True)
class Row:
    table: str
    row: int
    data: dict
    ref: str
    problems: list = field(default_factory=list)  # own rules: [(rule, detail)]
    blocked: str | None = None  # the skipped row this one depends on
    existing: bool = False
    linked: bool = False
    pk: int | None = None
    parsed: dict = field(default_factory=dict)

    def get(self, column: str) -> str:
        return self.data.get(column, "")

    def fail(self, rule: str, detail: str) -> None:
        self.problems.append((rule, detail))

    @property
    def skipped(self) -> bool:
        return bool(self.problems) or self.blocked is not None

    @property
    def new(self) -> bool:
        return not self.skipped and not self.existing


def _ref(table: str, data: dict, seq: Counter) -> str:
    if table == "payment_meta":
        return f"{data.get('payment_id', '')}/{data.get('key', '')}"
    if table == "outbound_statuses":
        outbound = data.get("outbound_mobiletech_id", "")
        seq[outbound] += 1
        return f"{outbound}#{seq[outbound]}"
    key = {"users": "id", "phone_numbers": "phone_number", "templates": "code", "billing_keys": "code",
           "inbound_messages": "mobiletech_id", "payments": "id", "outbound_messages": "mobiletech_id",
           "recurrent_payments": "cid"}[table]
    return data.get(key, "")


# --- bulk inserts --------------------------------------------------------------------------------------------

_PLAIN = (models.CharField, models.TextField, models.IntegerField, models.BooleanField, models.ForeignKey)


def _default(f, now: datetime):
    """What a column not given gets: now for ``auto_now``/``auto_now_add``, else the field's default."""
    if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False):
        return lambda: now
    if f.has_default() and callable(f.default):
        return f.get_default
    value = f.get_default()
    return lambda: value


def _preparer(f, db):
    """How a value goes to the database: as is for text, numbers and keys, else as Django prepares it."""
    if isinstance(f, _PLAIN):
        return None
    if isinstance(f, models.DateTimeField):
        return db.ops.adapt_datetimefield_value
    return lambda value: f.get_db_prep_save(value, db)


def insert(model, rows: list[dict], *, key: str | None = None) -> list[int] | None:
    """``INSERT`` ``rows`` (``{attname: value}``; a missing column gets the field's default) with one
    prepared statement run for all of them (``executemany``). Django's ``bulk_create`` compiles every
    value of every row into one SQL text, which under SQLite's 999-parameter limit makes a statement
    per few dozen rows and cost most of an import's time. Times given are kept, also in
    ``auto_now``/``auto_now_add`` columns (the export's history); missing ones are now. With ``key``
    (a unique column) the new rows' primary keys, in order."""
    if not rows:
        return [] if key is not None else None
    db = connections[DEFAULT_DB_ALIAS]
    now = timezone.now()
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    columns = [(f.attname, _default(f, now), _preparer(f, db)) for f in fields]
    params = []
    for row in rows:
        values = []
        for attname, default, prepare in columns:
            value = row[attname] if attname in row else default()
            values.append(value if prepare is None or value is None else prepare(value))
        params.append(values)
    quote = db.ops.quote_name
    sql = (f"INSERT INTO {quote(model._meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) "
           f"VALUES ({', '.join(['%s'] * len(fields))})")
    if key is not None and db.vendor == "postgresql":  # psycopg returns each row's id in order
        sql += f" RETURNING {quote(model._meta.pk.column)}"
        with db.cursor() as cursor, db.wrap_database_errors:  # the raw cursor: Django's error classes too
            cursor.cursor.executemany(sql, params, returning=True)
            pks = []
            while True:
                pks.append(cursor.cursor.fetchone()[0])
                if not cursor.cursor.nextset():
                    return pks
    with db.cursor() as cursor:
        cursor.executemany(sql, params)
    if key is None:
        return None
    found = dict(_in_lookup(model.objects, key, [row[key] for row in rows], key, "pk"))
    return [found[row[key]] for row in rows]


def analyze(*tables: type[models.Model]) -> None:
    """Fresh planner statistics after a bulk load on PostgreSQL: with the stale ones of an empty table
    it scans whole tables for each key lookup (of this run's chunks and of the next run)."""
    db = connections[DEFAULT_DB_ALIAS]
    if db.vendor != "postgresql":
        return
    with db.cursor() as cursor:
        for model in tables:
            cursor.execute(f"ANALYZE {db.ops.quote_name(model._meta.db_table)}")


# --- the import ---------------------------------------------------------------------------------------------


class MobiletechImport:
    """Plan (read the database, check every row, propagate skips), then write in chunks."""

    def __init__(self, tables: dict[str, list[dict]], *, chunk_size: int = 1000, progress: TextIO | None = None):
        self.chunk_size = max(1, chunk_size)
        self.progress = Progress(progress)
        self.rows: dict[str, list[Row]] = {}
        for table in TABLES:
            seq = Counter()
            self.rows[table] = [Row(table, n, data, _ref(table, data, seq))
                                for n, data in enumerate(tables.get(table, []), start=1)]
        self.first: dict[str, dict[str, Row]] = {table: {} for table in TABLES}
        self.seconds: dict[str, float] = {}  # per table written
        self.owner_cache: dict[str, int] | None = None  # number → reader, once the numbers are written

    # -- helpers --

    def _required_and_index(self, table: str) -> list[Row]:
        """Rows with their required columns, first occurrence of each key indexed; later ones are duplicates."""
        ok = []
        for row in self.rows[table]:
            missing = [c for c in REQUIRED[table] if not row.get(c)]
            if missing:
                row.fail("missing_field", f"empty {', '.join(missing)}")
                continue
            first = self.first[table].get(row.ref)
            if first is not None and table in DUPLICATE_RULE:
                row.fail(DUPLICATE_RULE[table], f"{row.ref} already in row {first.row}")
                continue
            self.first[table][row.ref] = row
            ok.append(row)
        return ok

    def _time(self, row: Row, column: str) -> datetime | None:
        try:
            value = parse_time(row.get(column))
        except ValueError:
            row.fail("invalid_value", f"{column} is not a time: {row.get(column)!r}")
            return None
        row.parsed[column] = value
        return value

    def _int(self, row: Row, column: str, default: int) -> int:
        raw = row.get(column)
        if not raw:
            return default
        if not raw.isdigit():
            row.fail("invalid_value", f"{column} is not a whole number: {raw!r}")
            return default
        return int(raw)

    def _user_known(self, ref: str) -> bool:
        return ref in self.first["users"] or ref in self.db_users

    def _user_pk(self, ref: str) -> int | None:
        row = self.first["users"].get(ref)
        if row is not None and row.pk is not None:
            return row.pk
        return self.db_users.get(ref)

    def _skipped(self, table: str, ref: str, in_db: bool = False) -> Row | None:
        """The file row ``ref`` stands for when it is skipped and the database does not have it either."""
        row = self.first[table].get(ref)
        return row if row is not None and row.skipped and not in_db else None

    def _inbound_ref(self, value: str) -> str | None:
        """Payment meta ``mobiletech_inbound_message_id``: the inbound's old ``id``, else its ``mobiletech_id``."""
        if value in self.inbound_by_source_id:
            return self.inbound_by_source_id[value]
        if value in self.first["inbound_messages"] or value in self.db_inbound:
            return value
        return None

    # -- planning --

    def plan(self) -> None:
        self.ok = {table: self._required_and_index(table) for table in TABLES}
        self._load_reference_data()
        self._check_users_and_phones()
        self._check_templates()
        self._check_billing_keys()
        self._check_inbound()
        self._check_payment_meta()
        self._check_outbound()
        self._check_statuses()
        self._check_payments()
        self._check_recurrent()
        self._propagate()
        self._resolve_recurrent_parents()

    def _load_reference_data(self) -> None:
        self.gateways = {g.code: g for g in PaymentGateway.objects.filter(code__in=(GATEWAY, RECURRENT_GATEWAY))}
        if set(self.gateways) != {GATEWAY, RECURRENT_GATEWAY}:
            raise ImportProblem("payment gateways mobiletech/mobiletech_recurrent are missing (run the migrations; "
                                "nothing was written)")
        self.types = {code: (pk, name) for pk, code, name in SubscriptionType.objects.values_list("pk", "code", "name")}
        self.type_vat = {}
        for type_id, vat in SubscriptionType.objects.values_list("pk", "items__vat"):
            if vat is not None:
                self.type_vat.setdefault(type_id, vat)
        self.db_users = dict(UserMeta.objects.filter(key=IMPORT_KEY).values_list("value", "user_id"))
        self.db_user_ext = {pk: ext for ext, pk in self.db_users.items()}
        self.db_templates = dict(Template.objects.values_list("code", "pk"))
        self.db_billkeys = {code: (pk, amount) for pk, code, amount in BillingKey.objects.values_list("pk", "code",
                                                                                                      "amount")}
        self.db_payments = dict(PaymentMeta.objects.filter(key=IMPORT_KEY).values_list("value", "payment_id"))
        ids = {r.get("mobiletech_id") for r in self.rows["inbound_messages"]}
        ids |= {r.get("rcv_msg_id") for r in self.rows["outbound_messages"]}
        ids |= {r.get("cid") for r in self.rows["recurrent_payments"]}
        ids |= {r.get("value") for r in self.rows["payment_meta"] if r.get("key") == "mobiletech_inbound_message_id"}
        self.db_inbound = dict(_in_lookup(InboundMessage.objects, "mobiletech_id", ids, "mobiletech_id", "pk"))
        self.db_outbound = dict(_in_lookup(OutboundMessage.objects, "mobiletech_id",
                                           (r.get("mobiletech_id") for r in self.rows["outbound_messages"]),
                                           "mobiletech_id", "pk"))
        cids = [r.get("cid") for r in self.rows["recurrent_payments"]]
        replies = _in_lookup(OutboundMessage.objects, "rcv_msg_id", cids, "rcv_msg_id", "payment_id")
        self.db_replies = {rcv for rcv, _payment in replies}
        self.db_paid_replies = {rcv for rcv, payment in replies if payment is not None}
        self.db_recurrent = {cid for (cid,) in _in_lookup(RecurrentPayment.objects.filter(
            gateway__code=RECURRENT_GATEWAY), "cid", cids, "cid")}

    def _check_users_and_phones(self) -> None:
        users = self.ok["users"]
        phones = self.ok["phone_numbers"]
        for row in users:
            if row.get("email"):
                email = User.objects.normalize_email(row.get("email"))
                try:
                    validate_email(email)
                except ValidationError:
                    row.fail("invalid_email", f"not an e-mail address: {row.get('email')!r}")
                row.parsed["email"] = email
        # phone numbers, file only: local format, one reader per number and one number per reader (R-MT-13)
        number_of_user: dict[str, Row] = {}
        for row in phones:
            user_ref = row.get("user_id")
            if not numbers.LOCAL.match(row.ref):
                row.fail("phone_not_local", f"{row.ref!r} is not a local number 09xxxxxxxx")
            elif user_ref in number_of_user:
                row.fail("phone_not_unique", f"reader {user_ref} already has {number_of_user[user_ref].ref} "
                                             f"(row {number_of_user[user_ref].row})")
            else:
                number_of_user[user_ref] = row
            if not self._user_known(user_ref):
                row.fail("unknown_user", f"no user {user_ref}")
        # e-mails: given, else named by the number (R-MT-19: public_name = the number)
        seen: dict[str, Row] = {}
        for row in users:
            if row.problems:
                continue
            if "email" not in row.parsed:
                phone = number_of_user.get(row.ref)
                local = re.sub(r"[^a-z0-9._-]+", "-", row.ref.lower())
                row.parsed["email"] = f"{phone.ref}@sms.invalid" if phone is not None else f"user-{local}@sms.invalid"
            phone = number_of_user.get(row.ref)
            row.parsed["public_name"] = row.get("public_name") or (phone.ref if phone is not None else "") or (
                row.ref if row.parsed["email"].endswith("@sms.invalid") else "")
            email = row.parsed["email"]
            if email in seen:
                row.fail("duplicate_user", f"e-mail {email} already used by user {seen[email].ref} "
                                           f"(row {seen[email].row})")
            else:
                seen[email] = row
            self._time(row, "created_at")
        # the database: known external id → existing; an e-mail of an account → link that account
        candidates = [r for r in users if not r.problems]
        by_email = dict(_in_lookup(User.objects, "email", (r.parsed["email"] for r in candidates), "email", "pk"))
        for row in candidates:
            if row.ref in self.db_users:
                row.existing, row.pk = True, self.db_users[row.ref]
                continue
            owner = by_email.get(row.parsed["email"])
            if owner is None:
                continue
            if owner in self.db_user_ext:
                row.fail("duplicate_user", f"e-mail {row.parsed['email']} belongs to the reader imported as "
                                           f"{self.db_user_ext[owner]}")
            else:
                row.linked, row.pk = True, owner
        known_numbers = dict(_in_lookup(PhoneNumber.objects, "phone_number", (r.ref for r in phones),
                                        "phone_number", "user_id"))
        user_pks = {pk for r in phones if (pk := self._user_pk(r.get("user_id"))) is not None}
        number_by_user = {u: n for n, u in _in_lookup(PhoneNumber.objects, "user_id", user_pks,
                                                       "phone_number", "user_id")}
        for row in phones:
            if row.problems:
                continue
            user_pk = self._user_pk(row.get("user_id"))
            owner = known_numbers.get(row.ref)
            if owner is not None and owner == user_pk:
                row.existing = True
            elif owner is not None:
                row.fail("phone_not_unique", f"{row.ref} belongs to another reader")
            elif user_pk is not None and user_pk in number_by_user:
                row.fail("phone_not_unique", f"reader {row.get('user_id')} already has {number_by_user[user_pk]}")

    def _check_templates(self) -> None:
        for row in self.ok["templates"]:
            if not SLUG.match(row.ref):
                row.fail("invalid_value", f"template code {row.ref!r} is not a slug of at most 100 characters")
            try:
                sandbox.variables(row.get("body"))
            except sandbox.TemplateProblem as exc:
                row.fail("invalid_template", str(exc))
            if not row.problems and row.ref in self.db_templates:
                row.existing, row.pk = True, self.db_templates[row.ref]

    def _check_billing_keys(self) -> None:
        for row in self.ok["billing_keys"]:
            try:
                row.parsed["amount"] = to_money(row.get("amount"))
            except InvalidAmount:
                row.fail("invalid_value", f"amount is not an amount: {row.get('amount')!r}")
            if len(row.ref) > 50:
                row.fail("invalid_value", "billing key code longer than 50 characters")
            if not row.problems and row.ref in self.db_billkeys:
                row.existing, row.pk = True, self.db_billkeys[row.ref][0]

    def _billkey_amount(self, code: str) -> Decimal | None:
        if code in self.db_billkeys:
            return self.db_billkeys[code][1]
        row = self.first["billing_keys"].get(code)
        return row.parsed.get("amount") if row is not None else None

    def _check_inbound(self) -> None:
        self.inbound_by_source_id: dict[str, str] = {}
        for row in self.ok["inbound_messages"]:
            if row.get("id"):
                self.inbound_by_source_id.setdefault(row.get("id"), row.ref)
            self._time(row, "receive_date")
            self._time(row, "created_at")
            if row.get("user_id") and not self._user_known(row.get("user_id")):
                row.fail("unknown_user", f"no user {row.get('user_id')}")
            if not row.problems and row.ref in self.db_inbound:
                row.existing, row.pk = True, self.db_inbound[row.ref]

    def _check_payment_meta(self) -> None:
        self.meta_of: dict[str, dict[str, Row]] = defaultdict(dict)
        for row in self.ok["payment_meta"]:
            if row.get("key") == IMPORT_KEY:
                row.fail("invalid_value", f"meta key {IMPORT_KEY} is the importer's own")
            elif row.get("payment_id") not in self.first["payments"]:
                row.fail("unknown_payment", f"no payment {row.get('payment_id')} in the export")
            else:
                self.meta_of[row.get("payment_id")][row.get("key")] = row

    def _check_outbound(self) -> None:
        self.links: dict[str, list[Row]] = defaultdict(list)  # payment → outbound rows naming it
        self.replies: dict[str, list[Row]] = defaultdict(list)  # inbound mobiletech_id → outbound rows answering it
        for row in self.ok["outbound_messages"]:
            code = row.get("template_code")
            if not code:
                row.fail("missing_template", "no template (R-MT-19: mandatory)")
            elif code not in self.first["templates"] and code not in self.db_templates:
                row.fail("missing_template", f"no template {code}")
            billkey = row.get("billkey")
            if not billkey:
                row.fail("unknown_billkey", "no billing key")
            elif billkey not in self.first["billing_keys"] and billkey not in self.db_billkeys:
                row.fail("unknown_billkey", f"no billing key {billkey}")
            rcv = row.get("rcv_msg_id")
            if rcv and rcv not in self.first["inbound_messages"] and rcv not in self.db_inbound:
                row.fail("outbound_rcv_msg_unknown", f"rcv_msg_id {rcv} names no inbound message")
            if row.get("user_id") and not self._user_known(row.get("user_id")):
                row.fail("unknown_user", f"no user {row.get('user_id')}")
            payment = row.get("payment_id")
            if payment and payment not in self.first["payments"] and payment not in self.db_payments:
                row.fail("unknown_payment", f"no payment {payment}")
            for column in ("created_at", "sent_at"):
                self._time(row, column)
            row.parsed["content_length"] = self._int(row, "content_length", 0)
            row.parsed["expiration"] = self._int(row, "expiration", 100 if rcv else 600)
            if payment:
                self.links[payment].append(row)
            if rcv:
                self.replies[rcv].append(row)
            if not row.problems and row.ref in self.db_outbound:
                row.existing, row.pk = True, self.db_outbound[row.ref]

    def _check_statuses(self) -> None:
        self.statuses_of: dict[str, list[Row]] = defaultdict(list)
        for row in self.ok["outbound_statuses"]:
            outbound = row.get("outbound_mobiletech_id")
            if outbound not in self.first["outbound_messages"]:
                row.fail("unknown_outbound", f"no outbound message {outbound} in the export")
                continue
            self._time(row, "created_at")
            self.statuses_of[outbound].append(row)
        for ref, outbound in self.first["outbound_messages"].items():
            history = [s for s in self.statuses_of.get(ref, []) if not s.problems]
            outbound.parsed["status"] = outbound.get("status") or (history[-1].get("status") if history else "")

    def _delivered(self, outbound: Row) -> bool:
        return statuses.meaning(outbound.parsed.get("status", ""), outbound.get("operator_type")) == statuses.DELIVERED

    def _check_payments(self) -> None:
        for row in self.ok["payments"]:
            try:
                row.parsed["amount"] = to_money(row.get("amount"))
            except InvalidAmount:
                row.fail("invalid_value", f"amount is not an amount: {row.get('amount')!r}")
            if row.get("status") not in ("", Payment.PAID):
                row.fail("payment_not_paid", f"status {row.get('status')} (import only successful payments)")
            if (row.get("gateway") or RECURRENT_GATEWAY) not in (GATEWAY, RECURRENT_GATEWAY):
                row.fail("unknown_gateway", f"gateway {row.get('gateway')} is not mobiletech/mobiletech_recurrent")
            if row.get("subscription_type") and row.get("subscription_type") not in self.types:
                row.fail("unknown_subscription_type", f"no subscription type {row.get('subscription_type')}")
            if not self._user_known(row.get("user_id")):
                row.fail("unknown_user", f"no user {row.get('user_id')}")
            self._time(row, "paid_at")
            self._time(row, "created_at")
            meta = {key: m.get("value") for key, m in self.meta_of.get(row.ref, {}).items()}
            missing = [key for key in PAYMENT_META if not meta.get(key)]
            if missing:
                row.fail("payment_meta_missing", f"no {', '.join(missing)}")
            else:
                try:
                    params = json.loads(meta["mobiletech_template_params"])
                except ValueError:
                    params = None
                if not isinstance(params, dict):
                    row.fail("invalid_value", "mobiletech_template_params is not a JSON object")
                inbound = self._inbound_ref(meta["mobiletech_inbound_message_id"])
                if inbound is None:
                    row.fail("unknown_inbound", f"mobiletech_inbound_message_id {meta['mobiletech_inbound_message_id']}"
                                                f" names no inbound message")
                row.parsed["inbound"] = inbound
            delivered = [o for o in self.links.get(row.ref, []) if self._delivered(o)]
            if not delivered:
                found = ", ".join(f"{o.ref} {o.parsed.get('status') or '(no status)'}"
                                  for o in self.links.get(row.ref, []))
                row.fail("payment_not_linked_d1", "no delivered (D1) outbound message names it"
                                                  + (f" ({found})" if found else ""))
            else:
                charged = delivered[-1]
                amount = self._billkey_amount(charged.get("billkey"))
                if amount is not None and "amount" in row.parsed and amount != row.parsed["amount"]:
                    row.fail("payment_amount_mismatch", f"amount {row.parsed['amount']} ≠ {amount} of billing key "
                                                        f"{charged.get('billkey')} ({charged.ref})")
                if meta.get("mobiletech_billkey") and meta["mobiletech_billkey"] != charged.get("billkey"):
                    row.fail("payment_billkey_mismatch", f"meta mobiletech_billkey {meta['mobiletech_billkey']} ≠ "
                                                         f"{charged.get('billkey')} of {charged.ref}")
                row.parsed["delivered"] = delivered
            if not row.problems and row.ref in self.db_payments:
                row.existing, row.pk = True, self.db_payments[row.ref]

    def _check_recurrent(self) -> None:
        for row in self.ok["recurrent_payments"]:
            cid = row.ref
            self._time(row, "charge_at")
            row.parsed["retries"] = self._int(row, "retries", RETRIES)
            if cid not in self.first["inbound_messages"] and cid not in self.db_inbound:
                row.fail("recurrent_cid_unknown", f"cid {cid} is no inbound mobiletech_id")
            elif not self.replies.get(cid) and cid not in self.db_replies:
                row.fail("recurrent_no_outbound", f"no outbound message has rcv_msg_id {cid}")
            elif not any(o.get("payment_id") for o in self.replies.get(cid, [])) and cid not in self.db_paid_replies:
                row.fail("recurrent_no_payment", f"no billed reply to {cid} carries a payment (R-MT-11)")
            if not self._user_known(row.get("user_id")):
                row.fail("unknown_user", f"no user {row.get('user_id')}")
            if row.get("subscription_type") and row.get("subscription_type") not in self.types:
                row.fail("unknown_subscription_type", f"no subscription type {row.get('subscription_type')}")
            parent = row.get("parent_payment_id")
            if parent and parent not in self.first["payments"] and parent not in self.db_payments:
                row.fail("unknown_payment", f"no payment {parent}")
            if not row.problems and cid in self.db_recurrent:
                row.existing = True

    # -- skips propagate to the rows that depend on skipped rows --

    def _dependency(self, row: Row) -> str | None:
        table = row.table

        def user(ref: str) -> str | None:
            parent = self._skipped("users", ref, ref in self.db_users)
            return f"user {ref} is skipped" if parent is not None else None

        if table == "phone_numbers":
            return user(row.get("user_id"))
        if table == "inbound_messages":
            return user(row.get("user_id")) if row.get("user_id") else None
        if table == "payment_meta":
            return "payment skipped" if self._skipped("payments", row.get("payment_id")) else None
        if table == "outbound_statuses":
            return "outbound skipped" if self._skipped("outbound_messages", row.get("outbound_mobiletech_id")) else None
        if table == "payments":
            inbound = row.parsed.get("inbound")
            if inbound and self._skipped("inbound_messages", inbound, inbound in self.db_inbound):
                return f"inbound message {inbound} is skipped"
            delivered = row.parsed.get("delivered", [])
            if delivered and all(o.skipped for o in delivered):
                return f"outbound message {delivered[-1].ref} is skipped"
            return user(row.get("user_id"))
        if table == "outbound_messages":
            for parent_table, ref, in_db in (
                    ("users", row.get("user_id"), row.get("user_id") in self.db_users),
                    ("templates", row.get("template_code"), row.get("template_code") in self.db_templates),
                    ("billing_keys", row.get("billkey"), row.get("billkey") in self.db_billkeys),
                    ("inbound_messages", row.get("rcv_msg_id"), row.get("rcv_msg_id") in self.db_inbound),
                    ("payments", row.get("payment_id"), row.get("payment_id") in self.db_payments)):
                if ref and self._skipped(parent_table, ref, in_db):
                    return f"{NOUN[parent_table]} {ref} is skipped"
            return None
        if table == "recurrent_payments":
            cid = row.ref
            if self._skipped("inbound_messages", cid, cid in self.db_inbound):
                return f"inbound message {cid} is skipped"
            replies = [o for o in self.replies.get(cid, []) if o.get("payment_id")]
            if cid not in self.db_paid_replies and replies and all(o.skipped for o in replies):
                return f"outbound message {replies[-1].ref} is skipped"
            parent = row.get("parent_payment_id")
            if parent and self._skipped("payments", parent, parent in self.db_payments):
                return f"payment {parent} is skipped"
            return user(row.get("user_id"))
        return None

    def _propagate(self) -> None:
        changed = True
        while changed:
            changed = False
            for table in TABLES:
                for row in self.rows[table]:
                    if row.skipped:
                        continue
                    reason = self._dependency(row)
                    if reason is not None:
                        row.blocked, row.existing = reason, False
                        changed = True

    def _resolve_recurrent_parents(self) -> None:
        """R-MT-19: the parent is the reader's last successful premium SMS payment (or the one named)."""
        pending = [r for r in self.rows["recurrent_payments"] if r.new]
        if not pending:
            return
        by_user: dict[str, list[Row]] = defaultdict(list)
        for payment in self.rows["payments"]:
            if not payment.skipped and self.first["payments"].get(payment.ref) is payment:
                by_user[payment.get("user_id")].append(payment)
        user_pks = {self._user_pk(r.get("user_id")) for r in pending} - {None}
        db_paid: dict[int, list[tuple]] = defaultdict(list)
        for pk, user_id, paid_at, type_id in _in_lookup(
                Payment.objects.filter(status__in=Payment.PAID_STATUSES,
                                       gateway__code__in=(GATEWAY, RECURRENT_GATEWAY)),
                "user_id", user_pks, "pk", "user_id", "paid_at", "subscription_type_id"):
            db_paid[user_id].append((pk, paid_at, type_id))
        imported_pks = {r.pk for rows in by_user.values() for r in rows if r.pk is not None}
        named = {self.db_payments[r.get("parent_payment_id")] for r in pending
                 if r.get("parent_payment_id") in self.db_payments}
        parents = {p for rows in db_paid.values() for p, _at, _t in rows} | imported_pks | named
        used = {pk for (pk,) in _in_lookup(RecurrentPayment.objects, "parent_payment_id", parents,
                                           "parent_payment_id")}
        taken: dict[object, str] = {}
        for row in pending:
            user_ref = row.get("user_id")
            named = row.get("parent_payment_id")
            if named:
                file_row = self.first["payments"].get(named)
                if file_row is not None and not file_row.skipped:
                    choice = ("file", file_row)
                else:
                    choice = ("db", self.db_payments[named])
            else:
                candidates = [(p.parsed.get("paid_at") or p.parsed.get("created_at") or timezone.now(), 1, n,
                               ("file", p)) for n, p in enumerate(by_user.get(user_ref, []))]
                candidates += [(paid_at or timezone.now(), 0, pk, ("db", pk))
                               for pk, paid_at, _t in db_paid.get(self._user_pk(user_ref), [])
                               if pk not in imported_pks]
                if not candidates:
                    row.fail("recurrent_no_payment", f"reader {user_ref} has no successful premium SMS payment "
                                                     f"to be the parent")
                    continue
                choice = max(candidates, key=lambda c: c[:3])[3]
            kind, payment = choice
            key = ("file", payment.ref) if kind == "file" else ("db", payment)
            payment_pk = payment.pk if kind == "file" else payment
            if key in taken or (payment_pk is not None and payment_pk in used):
                row.fail("duplicate_recurrent", f"parent payment {payment.ref if kind == 'file' else payment} "
                                                f"already schedules {taken.get(key, 'a recurrent payment')}")
                continue
            taken[key] = row.ref
            if kind == "file":
                type_code = row.get("subscription_type") or payment.get("subscription_type")
                type_id = self.types[type_code][0] if type_code else None
            else:
                type_code = row.get("subscription_type")
                type_id = self.types[type_code][0] if type_code else (
                    Payment.objects.filter(pk=payment).values_list("subscription_type_id", flat=True).first())
            if type_id is None:
                row.fail("unknown_subscription_type", "no subscription type (neither the row's nor the parent's)")
                continue
            row.parsed["parent"], row.parsed["type_id"] = choice, type_id

    # -- writing --

    def _write_chunks(self, label: str, rows: list[Row], write, tables: tuple) -> None:
        started = time.perf_counter()
        self.progress.show(label, 0, len(rows))
        done = 0
        for n, chunk in enumerate(_chunks(rows, self.chunk_size)):
            try:
                with transaction.atomic():
                    write(chunk)
            except IntegrityError as exc:  # written meanwhile by someone else (the webhook is live)
                raise ImportProblem(f"{label} rows {done + 1}-{done + len(chunk)} clash with rows written meanwhile "
                                    f"({exc}); earlier chunks are kept, run the import again to finish") from exc
            if n == 0:
                analyze(*tables)
            done += len(chunk)
            self.progress.show(label, done, len(rows))
        if done > self.chunk_size:
            analyze(*tables)
        self.seconds[label] = time.perf_counter() - started

    def write(self) -> None:
        for table, write, models_ in (
                ("users", self._write_users, (User, UserMeta)),
                ("phone_numbers", self._write_phones, (PhoneNumber,)),
                ("templates", self._write_templates, (Template,)),
                ("billing_keys", self._write_billkeys, (BillingKey,)),
                ("inbound_messages", self._write_inbound, (InboundMessage,)),
                ("payments", self._write_payments, (Payment, PaymentItem, PaymentMeta)),
                ("outbound_messages", self._write_outbound, (OutboundMessage, OutboundStatus)),
                ("recurrent_payments", self._write_recurrent, (RecurrentPayment,))):
            self._write_chunks(table, [r for r in self.rows[table] if r.new], write, models_)

    def _write_users(self, chunk: list[Row]) -> None:
        fresh = [r for r in chunk if not r.linked]
        rows = []
        for r in fresh:
            legacy = r.get("password_hash")
            password = f"bcrypt_php${legacy}" if legacy.startswith(LEGACY_BCRYPT_PREFIXES) else make_password(None)
            locale = r.get("locale") if r.get("locale") in dict(settings.LANGUAGES) else DEFAULT_LOCALE
            rows.append({"email": r.parsed["email"], "password": password, "first_name": r.get("first_name")[:150],
                             "last_name": r.get("last_name")[:150], "locale": locale, "source": SOURCE,
                             "public_name": r.parsed["public_name"][:255],
                             "created_at": r.parsed.get("created_at") or timezone.now()})
        for r, pk in zip(fresh, insert(User, rows, key="email"), strict=True):
            r.pk = pk
        insert(UserMeta, [{"user_id": r.pk, "key": IMPORT_KEY, "value": r.ref} for r in chunk])

    def _write_phones(self, chunk: list[Row]) -> None:
        insert(PhoneNumber, [{"phone_number": r.ref, "user_id": self._user_pk(r.get("user_id"))} for r in chunk])
        self.owner_cache = None

    def _write_templates(self, chunk: list[Row]) -> None:
        rows = [{"code": r.ref, "body": r.get("body"), "description": r.get("description")[:255]} for r in chunk]
        for r, pk in zip(chunk, insert(Template, rows, key="code"), strict=True):
            r.pk = pk

    def _write_billkeys(self, chunk: list[Row]) -> None:
        insert(BillingKey, [{"code": r.ref, "amount": r.parsed["amount"], "description": r.get("description")[:255]}
                            for r in chunk])

    def _owner(self, phone: str) -> int | None:
        """The reader a number belongs to (R-MT-13 lookup: ``+…`` is ``0`` + its last 9 digits)."""
        if self.owner_cache is None:
            numbers_ = set()
            for table, column in (("inbound_messages", "from"), ("outbound_messages", "to")):
                numbers_ |= {self._local(r.get(column)) for r in self.rows[table] if r.new and not r.get("user_id")}
            self.owner_cache = dict(_in_lookup(PhoneNumber.objects, "phone_number", numbers_, "phone_number",
                                               "user_id"))
        return self.owner_cache.get(self._local(phone))

    @staticmethod
    def _local(raw: str) -> str:
        raw = (raw or "").strip()
        return "0" + raw[-9:] if raw.startswith("+") else raw

    def _reader(self, row: Row, number_column: str) -> int | None:
        return self._user_pk(row.get("user_id")) if row.get("user_id") else self._owner(row.get(number_column))

    def _write_inbound(self, chunk: list[Row]) -> None:
        now = timezone.now()
        rows = [{
            "mobiletech_id": r.ref, "serv_id": r.get("serv_id")[:50], "project_id": r.get("project_id")[:50],
            "phone_from": r.get("from")[:20], "phone_to": r.get("to")[:20], "content": r.get("content"),
            "content_coding": r.get("content_coding")[:20], "dcs": r.get("dcs")[:20], "esm": r.get("esm")[:20],
            "operator_type": r.get("operator_type")[:5], "receive_date": r.parsed.get("receive_date"),
            "user_id": self._reader(r, "from"), "processed_at": r.parsed.get("receive_date") or now,
            "result": "imported",
            "created_at": r.parsed.get("created_at") or r.parsed.get("receive_date") or now}
            for r in chunk]
        for r, pk in zip(chunk, insert(InboundMessage, rows, key="mobiletech_id"), strict=True):
            r.pk = pk

    def _inbound_pk(self, mobiletech_id: str) -> int:
        row = self.first["inbound_messages"].get(mobiletech_id)
        return row.pk if row is not None and row.pk is not None else self.db_inbound[mobiletech_id]

    def _variable_symbols(self, count: int) -> list[str]:
        symbols: set[str] = set()
        while len(symbols) < count:
            draw = {f"{secrets.randbelow(10**10):010d}" for _ in range(count - len(symbols))}
            draw -= set(Payment.objects.filter(variable_symbol__in=draw).values_list("variable_symbol", flat=True))
            symbols |= draw
        return sorted(symbols)

    def _write_payments(self, chunk: list[Row]) -> None:
        now = timezone.now()
        rows = []
        for r, symbol in zip(chunk, self._variable_symbols(len(chunk)), strict=True):
            type_id = self.types[r.get("subscription_type")][0] if r.get("subscription_type") else None
            paid_at = r.parsed.get("paid_at") or r.parsed.get("created_at") or now
            rows.append({"user_id": self._user_pk(r.get("user_id")),
                             "gateway_id": self.gateways[r.get("gateway") or RECURRENT_GATEWAY].pk,
                             "subscription_type_id": type_id, "amount": r.parsed["amount"], "variable_symbol": symbol,
                             "status": Payment.PAID, "paid_at": paid_at,
                             "created_at": r.parsed.get("created_at") or paid_at,
                             "note": f"Imported from Mobiletech (payment {r.ref})"})
        items, metas = [], []
        for r, row, pk in zip(chunk, rows, insert(Payment, rows, key="variable_symbol"), strict=True):
            r.pk = pk
            type_code = r.get("subscription_type")
            name = self.types[type_code][1] if type_code else "Premium SMS"
            items.append({"payment_id": pk, "name": name[:255], "amount": row["amount"],
                              "vat": self.type_vat.get(row["subscription_type_id"], Decimal(0)),
                              "subscription_type_id": row["subscription_type_id"]})
            metas.append({"payment_id": pk, "key": IMPORT_KEY, "value": r.ref})
            for key, meta in self.meta_of.get(r.ref, {}).items():
                value = meta.get("value")
                if key == "mobiletech_inbound_message_id":
                    value = str(self._inbound_pk(r.parsed["inbound"]))
                metas.append({"payment_id": pk, "key": key, "value": value})
        insert(PaymentItem, items)
        insert(PaymentMeta, metas)

    def _payment_pk(self, ref: str) -> int:
        row = self.first["payments"].get(ref)
        return row.pk if row is not None and row.pk is not None else self.db_payments[ref]

    def _write_outbound(self, chunk: list[Row]) -> None:
        now = timezone.now()
        template_pks = {**self.db_templates, **{r.ref: r.pk for r in self.rows["templates"] if r.pk is not None}}
        rows, history = [], []
        for r in chunk:
            sent_at = r.parsed.get("sent_at")
            created_at = r.parsed.get("created_at") or sent_at or now
            reports = [(s.get("status")[:30], s.parsed.get("created_at") or created_at)
                       for s in self.statuses_of.get(r.ref, []) if not s.skipped]
            history.append(reports)
            rows.append({
                "user_id": self._reader(r, "to"), "mobiletech_id": r.ref,
                "payment_id": self._payment_pk(r.get("payment_id")) if r.get("payment_id") else None,
                "template_id": template_pks[r.get("template_code")], "status": r.parsed["status"][:30],
                "serv_id": r.get("serv_id")[:50], "project_id": r.get("project_id")[:50],
                "rcv_msg_id": r.get("rcv_msg_id")[:100], "phone_from": r.get("from")[:20], "phone_to": r.get("to")[:20],
                "billmsisdn": r.get("billmsisdn")[:20], "billkey": r.get("billkey")[:50],
                "amount": self._billkey_amount(r.get("billkey")), "content_length": r.parsed["content_length"],
                "expiration": r.parsed["expiration"], "dcs": r.get("dcs")[:20], "esm": r.get("esm")[:20],
                "operator_type": r.get("operator_type")[:5], "sent_at": sent_at, "created_at": created_at,
                "updated_at": max([created_at] + [at for _status, at in reports])})
        statuses_ = []
        for r, reports, pk in zip(chunk, history, insert(OutboundMessage, rows, key="mobiletech_id"), strict=True):
            r.pk = pk
            statuses_ += [{"outbound_id": pk, "status": status, "created_at": at} for status, at in reports]
        insert(OutboundStatus, statuses_)

    def _write_recurrent(self, chunk: list[Row]) -> None:
        rows = []
        for r in chunk:
            kind, parent = r.parsed["parent"]
            rows.append({
                "cid": r.ref[:255], "gateway_id": self.gateways[RECURRENT_GATEWAY].pk,
                "charge_at": r.parsed["charge_at"],
                "expires_at": None, "payment_id": None, "parent_payment_id": parent.pk if kind == "file" else parent,
                "retries": r.parsed["retries"], "user_id": self._user_pk(r.get("user_id")),
                "subscription_type_id": r.parsed["type_id"], "state": RecurrentPayment.ACTIVE,
                "note": "Imported from Mobiletech"})
        insert(RecurrentPayment, rows)

    # -- the report --

    def report(self, *, directory: str, fmt: str, dry_run: bool) -> ImportReport:
        result = ImportReport(directory=directory, format=fmt, dry_run=dry_run)
        for table in TABLES:
            counts = Counter({"rows": 0, "imported": 0, "linked": 0, "existing": 0, "skipped": 0})
            for row in self.rows[table]:
                counts["rows"] += 1
                if row.skipped:
                    counts["skipped"] += 1
                    for rule, detail in row.problems:
                        result.violations.append(Violation(table, row.row, row.ref, rule, detail))
                    if not row.problems and table not in ATTRIBUTE_TABLES:
                        result.violations.append(Violation(table, row.row, row.ref, "broken_dependency",
                                                           row.blocked))
                elif row.existing or self._attribute_of_existing(row):
                    counts["existing"] += 1
                elif row.linked:
                    counts["linked"] += 1
                else:
                    counts["imported"] += 1
            result.counts[table] = counts
        return result

    def _attribute_of_existing(self, row: Row) -> bool:
        parent_table = ATTRIBUTE_TABLES.get(row.table)
        if parent_table is None:
            return False
        ref = row.get("payment_id") if row.table == "payment_meta" else row.get("outbound_mobiletech_id")
        parent = self.first[parent_table].get(ref)
        return parent is not None and parent.existing


class _DryRun(Exception):
    pass


def run(tables: dict[str, list[dict]], *, directory: str = "", fmt: str = "csv", dry_run: bool = False,
        chunk_size: int = 1000, progress: TextIO | None = None) -> ImportReport:
    """Check and import already-read tables (see :func:`read_export`)."""
    started = time.perf_counter()
    job = MobiletechImport(tables, chunk_size=chunk_size, progress=progress)
    seconds = {}
    try:
        with transaction.atomic() if dry_run else contextlib.nullcontext():
            job.plan()
            seconds["check"] = time.perf_counter() - started
            written = time.perf_counter()
            job.write()
            seconds["write"] = time.perf_counter() - written
            if dry_run:
                raise _DryRun
    except _DryRun:
        pass
    result = job.report(directory=directory, fmt=fmt, dry_run=dry_run)
    result.seconds = {**seconds, **{f"write {table}": s for table, s in job.seconds.items()},
                      "total": time.perf_counter() - started}
    return result


def import_export(directory: str | Path, *, fmt: str | None = None, dry_run: bool = False, chunk_size: int = 1000,
                  progress: TextIO | None = sys.stderr) -> ImportReport:
    """Read the export in ``directory`` and import it (R-MT-19), reporting every violation (R-MT-20)."""
    started = time.perf_counter()
    try:
        fmt, tables = read_export(directory, fmt)
    except ImportProblem as exc:
        raise ImportProblem(f"{exc} (nothing was written)") from exc
    read = time.perf_counter() - started
    result = run(tables, directory=str(directory), fmt=fmt, dry_run=dry_run, chunk_size=chunk_size, progress=progress)
    result.seconds = {"read": read, **result.seconds, "total": time.perf_counter() - started}
    return result
