"""The ``masthead`` command."""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import threading
import time


def _django():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "masthead.settings")
    import django

    django.setup()


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


# --- serve ----------------------------------------------------------------------------------


def prepare(*, demo: bool) -> None:
    """Migrate, load the demo catalog into an empty database, make sure an admin exists."""
    from django.core.management import call_command

    from masthead.core import catalog
    from masthead.users import services
    from masthead.users.models import User

    call_command("migrate", interactive=False, verbosity=0)
    if demo and not User.objects.exists():
        report = catalog.load_file(catalog.DEMO_CATALOG)
        demo_purchase()
        print(f"Demo data loaded ({report.summary()}).")
        print("Demo reader: reader@example.com / reader-demo-1 (a monthly web subscription paid by card, renewing)")
        print("Demo family: family@example.com / family-demo-1 (a family subscription with 5 codes to share)")
    email = os.environ.get("MASTHEAD_ADMIN_EMAIL") or "admin@example.com"
    if services.find_user_by_email(email) is None:
        password = os.environ.get("MASTHEAD_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        services.create_user(email=email, password=password, is_superuser=True, source="serve", confirmed=True)
        shown = "(from MASTHEAD_ADMIN_PASSWORD)" if os.environ.get("MASTHEAD_ADMIN_PASSWORD") else password
        print(f"Admin login: {email} / {shown}")
    else:
        print(f"Admin login: {email} (existing account, password unchanged)")


def demo_purchase() -> None:
    """The demo reader buys the monthly web subscription with the card simulator: a paid payment,
    its subscription and a recurring profile, made the way a real purchase makes them. The demo
    family buys a family year once: its subscription comes with five codes to share."""
    from masthead.payments import services as payments
    from masthead.subscriptions.models import SubscriptionType
    from masthead.users import services as users

    reader = users.find_user_by_email("reader@example.com")
    subscription_type = SubscriptionType.objects.get(code="web_month")
    payment = payments.create_payment(user=reader, gateway="fake_card", subscription_type=subscription_type)
    payments.confirm(payment=payment, cid="card_4242424242424242")
    family = users.find_user_by_email("family@example.com")
    payments.confirm(payment=payments.create_payment(
        user=family, gateway="fake_card", subscription_type=SubscriptionType.objects.get(code="family_year")))


def serve(args) -> int:
    _django()
    from django.conf import settings

    prepare(demo=os.environ.get("MASTHEAD_DEMO", "1") != "0")
    host, port = args.host or settings.HOST, args.port or settings.PORT
    web = [sys.executable, "-m", "gunicorn", "masthead.wsgi:application", "--bind", f"{host}:{port}",
           "--workers", str(settings.WEB_WORKERS), "--access-logfile", "-", "--graceful-timeout", "10"]
    children = [subprocess.Popen(web)]
    if not args.no_worker:
        children.append(subprocess.Popen([sys.executable, "-m", "masthead.cli", "worker"]))
    print(f"Masthead on http://{host}:{port}/  (admin: /admin/, API docs: /api/v1/docs). Ctrl-C stops.",
          flush=True)
    return _supervise(children)


def _supervise(children: list[subprocess.Popen]) -> int:
    stopping = False

    def stop(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    code = 0
    while not stopping:
        if any(child.poll() is not None for child in children):
            code = 1
            print("a Masthead process exited; stopping the others", file=sys.stderr)
            break
        time.sleep(0.2)
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    print("Masthead stopped.")
    return code


def worker(args) -> int:
    _django()
    from django.core.management import call_command

    options = {}
    if args.workers:
        options["workers"] = args.workers
    call_command("run_huey", **options)
    return 0


# --- users, tokens, catalog -----------------------------------------------------------------


def user_create(args) -> int:
    _django()
    from masthead.users import services

    try:
        user = services.create_user(email=args.email, password=args.password, is_staff=args.staff,
                                    is_superuser=args.superuser, first_name=args.first_name or "",
                                    last_name=args.last_name or "", phone_number=args.phone or "",
                                    locale=args.locale, source="cli", confirmed=True)
    except services.UserError as exc:
        return _fail(exc.message)
    print(f"created user {user.pk} {user.email}")
    return 0


def token_create(args) -> int:
    _django()
    from masthead.users import services

    if not args.all and not args.endpoint:
        return _fail("give --all or at least one --endpoint OPERATION_ID")
    try:
        token, api_token = services.create_api_token(name=args.name, endpoints=args.endpoint or [],
                                                     all_endpoints=args.all, ip_restrictions=args.ip)
    except services.UserError as exc:
        return _fail(exc.message)
    scope = "all endpoints" if args.all else ", ".join(api_token.endpoints)
    print(f"API token '{api_token.name}' for {scope} (shown once):")
    print(token)
    return 0


def token_endpoints(args) -> int:
    _django()
    from masthead.core.api import api_token_operations

    print("\n".join(api_token_operations()))
    return 0


def catalog_load(args) -> int:
    _django()
    from masthead.core import catalog

    try:
        report = catalog.load_file(args.file)
    except catalog.CatalogError as exc:
        return _fail(f"{exc} (nothing was written)")
    print(report.summary())
    return 0


def family_generate(args) -> int:
    """R-FAM-5: bring a parent subscription's codes up to its target."""
    _django()
    from masthead.family import services
    from masthead.subscriptions.models import Subscription

    parent = Subscription.objects.filter(pk=args.subscription_id).first()
    if parent is None:
        return _fail(f"subscription {args.subscription_id} not found")
    try:
        created = services.generate_requests(parent=parent)
    except services.FamilyError as exc:
        return _fail(exc.message)
    except services.FamilyConfigError as exc:
        return _fail(f"cannot work out the codes: {exc}")
    print(f"subscription {parent.pk}: {len(created)} new codes")
    return 0


def sms_dispatch(args) -> int:
    """Run the SMS dispatcher in the foreground: once, or in a loop (what a worker's task does)."""
    _django()
    import time

    from masthead.messaging import dispatcher

    while True:
        result = dispatcher.run(budget_seconds=args.seconds)
        if result.claimed or result.reports or args.once:
            print(f"claimed {result.claimed} {result.outcomes} reports {result.reports} reclaimed {result.reclaimed}"
                  + (" (another dispatcher holds the lease)" if result.skipped else ""), flush=True)
        if args.once:
            return 0
        if not result.claimed:
            time.sleep(args.idle)


def mobiletech_simulator(args) -> int:
    """A loopback Mobiletech provider until Ctrl-C: answers ``send``, posts ``status`` reports back."""
    from masthead.mobiletech import simulator

    if not args.webhook:
        return _fail("give --webhook URL (e.g. http://127.0.0.1:8000/api/v1/mobiletech/webhook)")
    try:
        sim = simulator.Simulator(webhook=args.webhook, port=args.port, delay=args.delay, status=args.status,
                                  rules=args.fail_pattern, token=args.token, secret=args.secret,
                                  echo=lambda line: print(f"{time.strftime('%H:%M:%S')} {line}", flush=True))
        sim.start()
    except (simulator.SimulatorError, OSError) as exc:
        return _fail(str(exc))
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    print("Ctrl-C stops.", flush=True)
    stopping.wait()
    sim.stop()
    return 0


def mobiletech_inject(args) -> int:
    """Post a ``receive`` message (an SMS a reader sent) to the webhook, as the provider does."""
    from masthead.mobiletech import simulator

    mid, status, body = simulator.inject(args.webhook, phone_from=args.phone_from, to=args.to, text=args.text,
                                         mobiletech_id=args.id, serv_id=args.serv_id, project_id=args.project_id,
                                         operator_type=args.operator, secret=args.secret)
    print(f"receive {mid} → {status or 'no answer'} {body.decode(errors='replace')}")
    return 0 if status == 200 else 1


def import_mobiletech(args) -> int:
    """R-MT-19/20: import an export of an existing Mobiletech installation; exit 1 when rows were skipped."""
    _django()
    from masthead.mobiletech import importer

    try:
        report = importer.import_export(args.directory, fmt=args.format, dry_run=args.dry_run,
                                        chunk_size=args.chunk_size, progress=None if args.quiet else sys.stderr)
    except importer.ImportProblem as exc:
        return _fail(str(exc))
    if args.report:
        report.write(args.report)
    print(report.summary(limit=20 if args.report else None))
    return 1 if report.violations else 0


def manage(args) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "masthead.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(["masthead manage", *args.args])
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="masthead", description="Masthead: subscription and messaging CRM.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="migrate, load demo data, run web server and worker until Ctrl-C",
                       description="Migrate, load demo data into an empty database, make sure an admin exists, "
                                   "then run the web server (gunicorn) and a Huey worker until Ctrl-C. "
                                   "HOST/PORT, MASTHEAD_DEMO=0, MASTHEAD_ADMIN_EMAIL/PASSWORD apply.")
    p.add_argument("--host", help="address to bind (default $HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default $PORT or 8000)")
    p.add_argument("--no-worker", action="store_true", help="do not start the Huey worker")
    p.set_defaults(func=serve)

    p = sub.add_parser("worker", help="run a Huey consumer (background tasks and periodic jobs)")
    p.add_argument("--workers", type=int, help="worker threads (default $HUEY_WORKERS or 2)")
    p.set_defaults(func=worker)

    p = sub.add_parser("user", help="manage users")
    user_sub = p.add_subparsers(dest="action", required=True)
    p = user_sub.add_parser("create", help="create a user")
    p.add_argument("--email", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--staff", action="store_true", help="may log into the admin")
    p.add_argument("--superuser", action="store_true", help="staff with every permission")
    p.add_argument("--first-name")
    p.add_argument("--last-name")
    p.add_argument("--phone", help="phone number, stored as E.164")
    p.add_argument("--locale", default="en", help="en or sk")
    p.set_defaults(func=user_create)

    p = sub.add_parser("token", help="manage API tokens")
    token_sub = p.add_subparsers(dest="action", required=True)
    p = token_sub.add_parser("create", help="create an API token; the token is printed alone on the last line")
    p.add_argument("--name", required=True)
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("--all", action="store_true", help="whitelist every endpoint")
    scope.add_argument("--endpoint", action="append", metavar="OPERATION_ID",
                       help="whitelist one endpoint (repeat); see `masthead token endpoints`")
    p.add_argument("--ip", default="*", help="allowed client IPs/CIDR ranges, comma separated (default *)")
    p.set_defaults(func=token_create)
    p = token_sub.add_parser("endpoints", help="list the operation ids a token can be whitelisted for")
    p.set_defaults(func=token_endpoints)

    p = sub.add_parser("catalog", help="reference data as code")
    catalog_sub = p.add_subparsers(dest="action", required=True)
    p = catalog_sub.add_parser("load", help="create or update the catalog of FILE, all or nothing")
    p.add_argument("file", metavar="FILE.yaml")
    p.set_defaults(func=catalog_load)

    p = sub.add_parser("family", help="family and company subscriptions")
    family_sub = p.add_subparsers(dest="action", required=True)
    p = family_sub.add_parser("generate", help="generate the missing codes of a parent subscription")
    p.add_argument("--subscription-id", type=int, required=True, help="the parent subscription's id")
    p.set_defaults(func=family_generate)

    p = sub.add_parser("sms", help="SMS messaging")
    sms_sub = p.add_subparsers(dest="action", required=True)
    p = sms_sub.add_parser("dispatch", help="send due SMS now (in a loop unless --once)")
    p.add_argument("--once", action="store_true", help="one run, then exit")
    p.add_argument("--seconds", type=float, default=None, help="time budget of one run (default SMS_DISPATCH_SECONDS)")
    p.add_argument("--idle", type=float, default=1.0, help="seconds to wait when nothing was due")
    p.set_defaults(func=sms_dispatch)

    p = sub.add_parser("mobiletech", help="premium SMS (Mobiletech)")
    mobiletech_sub = p.add_subparsers(dest="action", required=True)
    p = mobiletech_sub.add_parser(
        "simulator", help="a loopback Mobiletech provider (or `simulator inject`: post an inbound SMS)",
        description="Answers the `send` command with an id, then posts `status` reports to --webhook after "
                    "--delay seconds, until Ctrl-C. Point MOBILETECH_CLIENT=http and MOBILETECH_GATEWAY_URL at it.")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one, printed)")
    p.add_argument("--webhook", help="our webhook URL, e.g. http://127.0.0.1:8000/api/v1/mobiletech/webhook")
    p.add_argument("--delay", type=float, default=1.0, help="seconds before a status report (default 1)")
    p.add_argument("--status", default="D1", help="report codes, comma separated, e.g. A0,D1 (default D1; none: no report)")
    p.add_argument("--fail-pattern", action="append", default=[], metavar="REGEX:CODE",
                   help="numbers matching REGEX get CODE instead (e.g. '^\\+421999:A5'; CODE none: no report); repeat")
    p.add_argument("--token", default="", help="bearer token `send` must carry (default: any)")
    p.add_argument("--secret", default=os.environ.get("MOBILETECH_WEBHOOK_SECRET", ""),
                   help="webhook secret sent as X-Webhook-Secret (default $MOBILETECH_WEBHOOK_SECRET)")
    p.set_defaults(func=mobiletech_simulator)
    simulator_sub = p.add_subparsers(dest="simulator_action")
    p = simulator_sub.add_parser("inject", help="post a `receive` message (an SMS a reader sent) to the webhook")
    p.add_argument("--webhook", required=True, help="our webhook URL")
    p.add_argument("--from", dest="phone_from", required=True, help="the sender, e.g. +421908123456")
    p.add_argument("--to", required=True, help="the short number, e.g. 8866")
    p.add_argument("--text", required=True, help="the SMS text, e.g. a keyword")
    p.add_argument("--id", help="the message id (default: a new UUID)")
    p.add_argument("--serv-id", default="1")
    p.add_argument("--project-id", default="1")
    p.add_argument("--operator", help="O, T, 2 or S (default: by the number's prefix)")
    p.add_argument("--secret", default=os.environ.get("MOBILETECH_WEBHOOK_SECRET", ""),
                   help="webhook secret (default $MOBILETECH_WEBHOOK_SECRET)")
    p.set_defaults(func=mobiletech_inject)

    p = sub.add_parser("import", help="import data from another system")
    import_sub = p.add_subparsers(dest="source", required=True)
    p = import_sub.add_parser("mobiletech", help="import a Mobiletech export (CSV or JSON files), idempotently",
                              description="Import users, phone numbers, templates, billing keys, inbound and "
                                          "outbound messages, payments and recurring payments of an existing "
                                          "Mobiletech installation (file names and columns: "
                                          "masthead/mobiletech/importer.py). Rows breaking an integrity rule are "
                                          "reported and not imported; running it again changes nothing. "
                                          "Exit status 1 when rows were skipped.")
    p.add_argument("directory", metavar="DIR", help="the export directory (users.csv, phone_numbers.csv, ...)")
    p.add_argument("--format", choices=("csv", "json"), help="file format (default: what DIR holds)")
    p.add_argument("--dry-run", action="store_true", help="check and count everything, write nothing")
    p.add_argument("--report", metavar="FILE", help="write every violation and the totals to FILE (.json or .csv)")
    p.add_argument("--chunk-size", type=int, default=1000, help="rows per transaction (default 1000)")
    p.add_argument("--quiet", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=import_mobiletech)

    p = sub.add_parser("manage", help="run any Django management command", add_help=False)
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(func=manage)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
