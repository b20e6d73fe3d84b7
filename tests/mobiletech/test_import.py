"""``masthead import mobiletech`` (R-MT-19, integrity checks R-MT-20): a generated export of 10,000
readers with 5 % broken rows imports the rest, reports each broken row with its rule, and a
second run changes nothing; one test per rule; dry run; CSV and JSON; the command line."""

import io
import json
import time
from collections import Counter
from datetime import timedelta
from decimal import Decimal

import pytest

from masthead.cli import main
from masthead.mobiletech import importer
from masthead.mobiletech.models import (
    BillingKey,
    InboundMessage,
    OutboundMessage,
    OutboundStatus,
    PhoneNumber,
    Template,
)
from masthead.payments.models import Payment, PaymentItem, PaymentMeta, RecurrentPayment
from masthead.subscriptions.models import ContentAccess, Subscription
from masthead.subscriptions.services import ItemSpec, save_subscription_type
from masthead.users import services as user_services
from masthead.users.models import User, UserMeta
from tests.mobiletech.export_factory import KINDS, generate

pytestmark = pytest.mark.django_db(transaction=False)
MODELS = (User, UserMeta, PhoneNumber, Template, BillingKey, InboundMessage, Payment, PaymentMeta, PaymentItem,
          OutboundMessage, OutboundStatus, RecurrentPayment)
MODEL_TABLE = {User: "users", PhoneNumber: "phone_numbers", Template: "templates", BillingKey: "billing_keys",
               InboundMessage: "inbound_messages", Payment: "payments", PaymentMeta: "payment_meta",
               OutboundMessage: "outbound_messages", OutboundStatus: "outbound_statuses",
               RecurrentPayment: "recurrent_payments"}


@pytest.fixture
def sms_month(db):
    ContentAccess.objects.get_or_create(name="web")
    subscription_type, _ = save_subscription_type(
        code="sms_month", fields={"name": "SMS month", "user_label": "Web month", "price": "4.00", "length": 30},
        content_access=["web"], items=[ItemSpec("Web", Decimal("4.00"), Decimal(20))])
    return subscription_type


def snapshot() -> dict[str, int]:
    return {model.__name__: model.objects.count() for model in MODELS}


def found(report: importer.ImportReport) -> Counter:
    return Counter((v.table, v.ref, v.rule) for v in report.violations)


def run(directory, **options) -> importer.ImportReport:
    return importer.import_export(directory, progress=None, **options)


def assert_counts(report, export):
    """Rows, imported (new or linked) and skipped per table exactly as the export says."""
    for table in importer.TABLES:
        counts = report.counts[table]
        assert (table, counts["rows"], counts["imported"] + counts["linked"], counts["skipped"]) == (
            table, len(export.tables[table]), export.imported(table), export.skipped[table])


# --- the done-when: 10,000 readers, 5 % broken, twice ---------------------------------------------------------


def test_ten_thousand_readers_five_percent_broken_import_the_rest_and_twice_changes_nothing(sms_month, tmp_path,
                                                                                            capsys):
    started = time.perf_counter()
    export = generate(10_000, 0.05)
    directory = export.write(tmp_path / "export", "csv")
    generated = time.perf_counter() - started
    assert len(export.broken_users) == 500 and set(Counter(export.broken_users.values()).values()) == {25}
    before = snapshot()

    started = time.perf_counter()
    first = run(directory)
    first_seconds = time.perf_counter() - started

    # every broken row reported once with its rule, nothing else reported
    assert found(first) == export.expected
    assert {rule for _table, _ref, rule in export.expected} >= set(KINDS) | {"broken_dependency"}
    assert_counts(first, export)
    assert first.counts["users"]["imported"] == 10_000 - 25  # the readers with an invalid e-mail
    assert first.counts["users"]["linked"] == 0
    after = snapshot()
    imported = {table: export.imported(table) for table in importer.TABLES}
    assert after["User"] - before["User"] == imported["users"]
    assert after["UserMeta"] - before["UserMeta"] == imported["users"]
    assert after["PaymentMeta"] - before["PaymentMeta"] == imported["payment_meta"] + imported["payments"]
    assert after["PaymentItem"] - before["PaymentItem"] == imported["payments"]
    for model, table in MODEL_TABLE.items():
        if model not in (User, PaymentMeta):
            assert (table, after[model.__name__] - before[model.__name__]) == (table, imported[table])

    # what was written, for a clean reader and for readers whose rows were partly skipped
    assert_clean_reader(8, has_free=True)  # reader 8: e-mail, free info SMS
    assert_clean_reader(3, has_free=False)  # reader 3: no e-mail → named by the number
    ref = next(user for user, kind in export.broken_users.items() if kind == "payment_not_linked_d1")
    i = int(ref[1:])  # the renewal push failed (A1) but its payment says paid: payment and push skipped
    profile = RecurrentPayment.objects.get(user__meta__key="mobiletech_import_id", user__meta__value=ref)
    assert profile.parent_payment.meta.get(key="mobiletech_import_id").value == f"p-{i}-1"  # the last good one
    assert not Payment.objects.filter(meta__key="mobiletech_import_id", meta__value=f"p-{i}-2").exists()
    assert not OutboundMessage.objects.filter(mobiletech_id=f"mt-{i}-2").exists()
    twin = f"u{export_twin(export):05d}-twin"  # a second row with a known reader's e-mail: not imported
    assert not UserMeta.objects.filter(key="mobiletech_import_id", value=twin).exists()
    assert ("users", twin, "duplicate_user") in export.expected
    # history is not replayed: no subscription made, no keyword handled, nothing sent
    assert not Subscription.objects.exists()
    assert not InboundMessage.objects.filter(processed_at__isnull=True).exists()
    assert not OutboundMessage.objects.filter(mobiletech_id__isnull=True).exists()

    # the second run: nothing new, every table unchanged, the same violations
    started = time.perf_counter()
    second = run(directory)
    second_seconds = time.perf_counter() - started
    assert snapshot() == after
    assert second.imported == 0
    assert found(second) == export.expected
    for table in importer.TABLES:
        assert (table, second.counts[table]["imported"], second.counts[table]["existing"],
                second.counts[table]["skipped"]) == (table, 0, export.imported(table), export.skipped[table])
    with capsys.disabled():
        rows = sum(len(rows) for rows in export.tables.values())
        phases = ", ".join(f"{k} {v:.1f}" for k, v in first.seconds.items())
        print(f"\nmobiletech import: {rows} rows generated in {generated:.1f} s; first run {first_seconds:.1f} s "
              f"({phases}); second run {second_seconds:.1f} s")


def export_twin(export) -> int:
    """A reader whose e-mail a twin row repeats (in upper case)."""
    return int(next(user for user, kind in export.broken_users.items() if kind == "duplicate_user")[1:])


def assert_clean_reader(i: int, *, has_free: bool):
    ref = f"u{i:05d}"
    reader = User.objects.get(meta__key="mobiletech_import_id", meta__value=ref)
    number = f"0908{i:06d}"
    if i % 3 == 0:
        assert (reader.email, reader.public_name) == (f"{number}@sms.invalid", number)
    else:
        assert (reader.email, reader.public_name) == (f"reader{i}@example.com", number)
    assert (reader.source, reader.has_usable_password()) == ("import:mobiletech", False)
    assert reader.mobiletech_phone.phone_number == number
    mo1 = InboundMessage.objects.get(mobiletech_id=f"mo-{i}-1")
    assert (mo1.user, mo1.phone_from, mo1.result, mo1.processed_at is not None) == (
        reader, f"+421908{i:06d}", "imported", True)
    p1, p2 = (Payment.objects.get(meta__key="mobiletech_import_id", meta__value=f"p-{i}-{n}") for n in (1, 2))
    for payment in (p1, p2):
        assert (payment.user, payment.status, payment.gateway.code, payment.amount, payment.subscription_type.code,
                payment.subscription_id) == (reader, "paid", "mobiletech_recurrent", Decimal("4.00"), "sms_month", None)
        meta = dict(payment.meta.values_list("key", "value"))
        assert meta["mobiletech_inbound_message_id"] == str(mo1.pk)  # the local row id (R-MT-10)
        assert meta["mobiletech_billkey"] == "BK4"
        assert list(payment.items.values_list("name", "amount", "vat")) == [("SMS month", Decimal("4.00"),
                                                                             Decimal("20.00"))]
    mt1 = OutboundMessage.objects.get(mobiletech_id=f"mt-{i}-1")
    assert (mt1.payment, mt1.rcv_msg_id, mt1.status, mt1.template.code, mt1.amount, mt1.user) == (
        p1, mo1.mobiletech_id, "D1", "bought", Decimal("4.00"), reader)
    assert list(mt1.history.values_list("status", flat=True)) == ["A0", "D1"]
    assert mt1.created_at == p1.paid_at - timedelta(minutes=1)  # the export's time, kept
    assert mt1.updated_at == mt1.created_at + timedelta(seconds=20)  # its last delivery report
    assert [h.created_at for h in mt1.history.all()] == [mt1.created_at + timedelta(seconds=s) for s in (10, 20)]
    profile = RecurrentPayment.objects.get(user=reader)
    assert (profile.cid, profile.gateway.code, profile.state, profile.retries, profile.parent_payment,
            profile.payment, profile.expires_at, profile.subscription_type.code) == (
        mo1.mobiletech_id, "mobiletech_recurrent", "active", 4, p2, None, None, "sms_month")
    assert OutboundMessage.objects.filter(mobiletech_id=f"mt-{i}-3").exists() is has_free


# --- one rule at a time ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_each_rule_reports_exactly_the_broken_rows_and_imports_the_rest(kind, sms_month, tmp_path):
    export = generate(4, 0.5, kinds=(kind,))  # readers 1 and 3 broken
    report = run(export.write(tmp_path, "csv"))
    assert found(report) == export.expected
    side_effects = {"unknown_payment": {"payment_not_linked_d1"}}  # the payment the push lost
    assert {rule for _t, _r, rule in export.expected} - {"broken_dependency"} == {kind} | side_effects.get(kind, set())
    assert_counts(report, export)
    assert run(tmp_path).imported == 0


def test_missing_fields_and_invalid_values(sms_month, tmp_path):
    export = generate(2)
    tables = export.tables
    tables["users"].append({"id": "", "email": "nobody@example.com"})
    tables["payments"][0]["amount"] = "four"  # p-0-1
    tables["inbound_messages"][0]["receive_date"] = "yesterday"  # mo-0-1
    tables["recurrent_payments"][1]["retries"] = "many"  # reader 1's profile
    tables["outbound_statuses"].append({"outbound_mobiletech_id": "mt-1-1", "status": ""})
    tables["templates"].append({"code": "bad code!", "body": "x"})
    report = run(export.write(tmp_path))
    assert sorted((v.table, v.row, v.ref, v.rule) for v in report.violations) == sorted([
        ("users", 3, "", "missing_field"),
        ("payments", 1, "p-0-1", "invalid_value"),
        ("inbound_messages", 1, "mo-0-1", "invalid_value"),
        ("recurrent_payments", 2, "mo-1-1", "invalid_value"),
        ("outbound_statuses", len(tables["outbound_statuses"]), "mt-1-1#3", "missing_field"),
        ("templates", 4, "bad code!", "invalid_value"),
        # reader 0's keyword SMS is skipped: the payments naming it, the replies and the profile follow
        ("payments", 2, "p-0-2", "broken_dependency"),
        ("outbound_messages", 1, "mt-0-1", "broken_dependency"),
        ("outbound_messages", 2, "mt-0-2", "broken_dependency"),
        ("recurrent_payments", 1, "mo-0-1", "broken_dependency"),
    ])
    details = {(v.table, v.rule): v.detail for v in report.violations}
    assert details[("payments", "invalid_value")] == "amount is not an amount: 'four'"
    assert details[("users", "missing_field")] == "empty id"
    assert details[("outbound_messages", "broken_dependency")] in {"payment p-0-1 is skipped",
                                                                   "payment p-0-2 is skipped"}
    assert details[("recurrent_payments", "broken_dependency")] == "inbound message mo-0-1 is skipped"
    # reader 0 keeps the account, the number and the free info SMS (it does not depend on mo-0-1)
    assert OutboundMessage.objects.filter(mobiletech_id="mt-0-3").exists()
    assert report.counts["users"]["imported"] == 2


def test_templates_and_billing_keys_rules(sms_month, tmp_path):
    export = generate(1)
    export.tables["templates"] += [{"code": "bought", "body": "again"}, {"code": "broken", "body": "{{ oops"}]
    export.tables["billing_keys"] += [{"code": "BK4", "amount": "5.00"}, {"code": "BK9", "amount": "lots"}]
    report = run(export.write(tmp_path))
    assert found(report) == Counter({("templates", "bought", "duplicate_template"): 1,
                                     ("templates", "broken", "invalid_template"): 1,
                                     ("billing_keys", "BK4", "duplicate_billkey"): 1,
                                     ("billing_keys", "BK9", "invalid_value"): 1})
    assert Template.objects.get(code="bought").body == "Thanks! {{ subscription_name }} is yours."
    assert BillingKey.objects.get(code="BK4").amount == Decimal("4.00")


def test_payment_rules_beyond_the_generator(sms_month, tmp_path):
    export = generate(5)
    payments = export.tables["payments"]
    payments[0]["status"] = "form"  # reader 0, p-0-1
    payments[3]["gateway"] = "fake_card"  # reader 1, p-1-2
    payments[5]["subscription_type"] = "nope"  # reader 2, p-2-2
    meta = export.tables["payment_meta"]
    next(m for m in meta if m["payment_id"] == "p-3-2" and m["key"] == "mobiletech_inbound_message_id")["value"] = "999"
    next(m for m in meta if m["payment_id"] == "p-4-2" and m["key"] == "mobiletech_template_params")["value"] = "[1]"
    meta += [{"payment_id": "p-4-1", "key": "mobiletech_billkey", "value": "BK4"},
             {"payment_id": "p-ghost", "key": "note", "value": "x"},
             {"payment_id": "p-4-1", "key": "mobiletech_import_id", "value": "x"}]
    report = run(export.write(tmp_path))
    own = Counter((v.table, v.ref, v.rule) for v in report.violations if v.rule != "broken_dependency")
    assert own == Counter({("payments", "p-0-1", "payment_not_paid"): 1, ("payments", "p-1-2", "unknown_gateway"): 1,
                           ("payments", "p-2-2", "unknown_subscription_type"): 1,
                           ("payments", "p-3-2", "unknown_inbound"): 1, ("payments", "p-4-2", "invalid_value"): 1,
                           ("payment_meta", "p-4-1/mobiletech_billkey", "duplicate_meta"): 1,
                           ("payment_meta", "p-ghost/note", "unknown_payment"): 1,
                           ("payment_meta", "p-4-1/mobiletech_import_id", "invalid_value"): 1})
    dependants = {(v.table, v.ref) for v in report.violations if v.rule == "broken_dependency"}
    # p-0-1 skipped: its reply goes, and with it the profile (no billed reply left on the cid)
    assert dependants == {("outbound_messages", "mt-0-1"), ("recurrent_payments", "mo-0-1"),
                          ("outbound_messages", "mt-1-2"), ("outbound_messages", "mt-2-2"),
                          ("outbound_messages", "mt-3-2"), ("outbound_messages", "mt-4-2")}
    # readers 1-4 keep their first payment as the profile's parent
    parents = {row.cid: row.parent_payment.meta.get(key="mobiletech_import_id").value
               for row in RecurrentPayment.objects.all()}
    assert parents == {"mo-1-1": "p-1-1", "mo-2-1": "p-2-1", "mo-3-1": "p-3-1", "mo-4-1": "p-4-1"}


def test_o2_d0_counts_as_delivered_and_unknown_outbound_statuses(sms_month, tmp_path):
    export = generate(1)
    mt2 = next(o for o in export.tables["outbound_messages"] if o["mobiletech_id"] == "mt-0-2")
    mt2.update(status="D0", operator_type="2")  # R-MT-4: O2's D0 is delivered
    export.tables["outbound_statuses"].append({"outbound_mobiletech_id": "mt-0-9", "status": "D1"})
    report = run(export.write(tmp_path))
    assert found(report) == Counter({("outbound_statuses", "mt-0-9#1", "unknown_outbound"): 1})
    assert OutboundMessage.objects.get(mobiletech_id="mt-0-2").payment.status == "paid"


def test_recurrent_named_parent_payment(sms_month, tmp_path):
    export = generate(2)
    # reader 0: the named parent is the first payment; reader 1 names a payment the export lacks
    export.tables["recurrent_payments"][0]["parent_payment_id"] = "p-0-1"
    export.tables["recurrent_payments"][1]["parent_payment_id"] = "p-9-9"
    report = run(export.write(tmp_path))
    assert found(report) == Counter({("recurrent_payments", "mo-1-1", "unknown_payment"): 1})
    profile = RecurrentPayment.objects.get()
    assert profile.parent_payment.meta.get(key="mobiletech_import_id").value == "p-0-1"


def test_recurrent_without_any_successful_payment_of_the_reader(sms_month, tmp_path):
    """The reply on the cid names a payment imported earlier for another reader: the reader of the
    profile has no successful payment to be its parent (R-MT-19: at least one must be imported)."""
    first = generate(1)
    run(first.write(tmp_path / "first"))
    reader1 = generate(1, start=1).tables
    reader1["payments"], reader1["payment_meta"] = [], []
    reader1["outbound_messages"] = [o for o in reader1["outbound_messages"] if o["mobiletech_id"] == "mt-1-1"]
    reader1["outbound_messages"][0]["payment_id"] = "p-0-1"  # imported by the first run, reader 0's
    reader1["outbound_statuses"] = [s for s in reader1["outbound_statuses"] if s["outbound_mobiletech_id"] == "mt-1-1"]
    report = importer.run(reader1, progress=None)
    assert found(report) == Counter({("recurrent_payments", "mo-1-1", "recurrent_no_payment"): 1})
    detail = report.violations[0].detail
    assert detail == "reader u00001 has no successful premium SMS payment to be the parent"
    assert OutboundMessage.objects.get(mobiletech_id="mt-1-1").payment.user.meta.get().value == "u00000"


def test_phone_number_and_user_conflicts_with_the_database(sms_month, tmp_path, make_user):
    # an account that already exists: the export's e-mail links it instead of creating another
    existing = make_user(email="reader1@example.com")
    # a number that already belongs to another reader
    other = make_user(email="other@example.com")
    PhoneNumber.objects.create(phone_number="0908000002", user=other)
    # a reader who wrote in before the import: named by the number, linked by it
    texter = user_services.create_user(email="0908000003@sms.invalid", public_name="0908000003", source="mobiletech")
    PhoneNumber.objects.create(phone_number="0908000003", user=texter)
    export = generate(4)
    report = run(export.write(tmp_path))
    assert found(report) == Counter({("phone_numbers", "0908000002", "phone_not_unique"): 1})
    assert (report.counts["users"]["imported"], report.counts["users"]["linked"]) == (2, 2)
    assert User.objects.get(meta__key="mobiletech_import_id", meta__value="u00001") == existing
    assert User.objects.get(meta__key="mobiletech_import_id", meta__value="u00003") == texter
    assert InboundMessage.objects.get(mobiletech_id="mo-3-1").user == texter
    # an e-mail that belongs to a reader imported under another external id
    export.tables["users"].append({"id": "u-other", "email": "READER1@example.com"})
    report = run(export.write(tmp_path))
    assert found(report) == Counter({("phone_numbers", "0908000002", "phone_not_unique"): 1,
                                     ("users", "u-other", "duplicate_user"): 1})
    assert report.imported == 0
    # … and in another export, where the database alone knows it
    report = importer.run({"users": [{"id": "u-else", "email": "reader2@example.com"}]}, progress=None)
    assert [(v.ref, v.rule, v.detail) for v in report.violations] == [
        ("u-else", "duplicate_user", "e-mail reader2@example.com belongs to the reader imported as u00002")]


def test_a_clash_with_rows_written_meanwhile_stops_and_a_second_run_finishes(sms_month, tmp_path):
    """The webhook is live during the import: a keyword SMS stored between the check and the write."""
    export = generate(30)
    _fmt, tables = importer.read_export(export.write(tmp_path))
    job = importer.MobiletechImport(tables, chunk_size=10)
    job.plan()
    InboundMessage.objects.create(mobiletech_id="mo-12-1", phone_from="+421908000012")
    with pytest.raises(importer.ImportProblem, match="inbound_messages rows 11-20 clash with rows written meanwhile"):
        job.write()
    assert InboundMessage.objects.count() == 1 + 10  # the first chunk is kept, the clashing one is not
    assert not Payment.objects.exists()
    report = run(tmp_path)
    assert report.counts["inbound_messages"]["existing"] == 11 and not report.violations
    assert InboundMessage.objects.count() == len(tables["inbound_messages"])
    assert InboundMessage.objects.get(mobiletech_id="mo-12-1").user is None  # the webhook's row, left as it was


# --- dry run, formats, the command ----------------------------------------------------------------------------------


def test_dry_run_checks_and_counts_everything_and_writes_nothing(sms_month, tmp_path):
    export = generate(60, 0.1)
    directory = export.write(tmp_path)
    before = snapshot()
    dry = run(directory, dry_run=True)
    assert snapshot() == before
    assert dry.dry_run and found(dry) == export.expected
    assert_counts(dry, export)
    real = run(directory)
    assert ({t: dict(c) for t, c in real.counts.items()}, real.violations) == (
        {t: dict(c) for t, c in dry.counts.items()}, dry.violations)
    assert snapshot() != before
    assert run(directory, dry_run=True).imported == 0


def test_csv_and_json_exports_import_the_same(sms_month, tmp_path):
    export = generate(40, 0.25)
    csv_dir, json_dir = export.write(tmp_path / "csv", "csv"), export.write(tmp_path / "json", "json")
    assert json.loads((json_dir / "outbound_messages.json").read_text())[0]["content_length"] == 40
    assert isinstance(json.loads((json_dir / "payment_meta.json").read_text())[3]["value"], dict)
    from_csv = run(csv_dir, dry_run=True)
    from_json = run(json_dir, fmt="json", dry_run=True)
    assert (from_csv.format, from_json.format) == ("csv", "json")
    assert ({t: dict(c) for t, c in from_csv.counts.items()}, from_csv.violations) == (
        {t: dict(c) for t, c in from_json.counts.items()}, from_json.violations)
    run(json_dir)
    assert run(csv_dir).imported == 0  # the CSV export names the same rows
    assert OutboundMessage.objects.get(mobiletech_id="mt-0-1").content_length == 40
    params = PaymentMeta.objects.get(payment__meta__value="p-0-1", key="mobiletech_template_params").value
    assert json.loads(params) == {"subscription_name": "SMS"}


def test_progress_bar_on_the_given_stream(sms_month, tmp_path):
    stream = io.StringIO()
    importer.import_export(generate(30).write(tmp_path), chunk_size=10, progress=stream)
    lines = stream.getvalue().splitlines()
    assert "users                [" + "." * 30 + "] 0/30" in lines
    assert "users                [" + "#" * 10 + "." * 20 + "] 10/30" in lines
    assert "users                [" + "#" * 30 + "] 30/30" in lines
    assert any(line.startswith("recurrent_payments") and line.endswith("] 30/30") for line in lines)


def test_command_line(sms_month, tmp_path, capsys):
    export = generate(20, 0.2)
    directory = export.write(tmp_path / "export", "json")
    report_file = tmp_path / "report.json"
    code = main(["import", "mobiletech", str(directory), "--dry-run", "--report", str(report_file)])
    out = capsys.readouterr()
    assert code == 1  # rows were skipped
    assert "dry run: nothing was written" in out.out and "users" in out.err
    assert User.objects.count() == 0
    written = json.loads(report_file.read_text())
    assert written["dry_run"] is True
    assert Counter((v["table"], v["ref"], v["rule"]) for v in written["violations"]) == export.expected
    assert written["totals"]["users"]["skipped"] == export.skipped["users"]
    csv_report = tmp_path / "report.csv"
    assert main(["import", "mobiletech", str(directory), "--format", "json", "--report", str(csv_report),
                 "--quiet"]) == 1
    assert capsys.readouterr().err == ""
    assert csv_report.read_text().splitlines()[0] == "table,row,ref,rule,detail"
    assert len(csv_report.read_text().splitlines()) == 1 + sum(export.expected.values())
    assert main(["import", "mobiletech", str(tmp_path / "missing")]) == 2
    assert "not a directory" in capsys.readouterr().err
    clean = generate(3).write(tmp_path / "clean", "csv")
    assert main(["import", "mobiletech", str(clean), "--quiet"]) == 0
