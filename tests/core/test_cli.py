"""The masthead command: user, token and catalog subcommands, and --help everywhere."""

import subprocess
import sys

import pytest

from masthead.cli import build_parser, main, prepare
from masthead.payments.models import Payment, RecurrentPayment
from masthead.subscriptions.models import ContentAccess
from masthead.users import services
from masthead.users.models import ApiToken, User

pytestmark = pytest.mark.django_db


def test_user_create(capsys):
    assert main(["user", "create", "--email", "Ops@Example.com", "--password", "long-enough-1", "--staff"]) == 0
    user = User.objects.get(email="ops@example.com")
    assert user.is_staff and not user.is_superuser and user.check_password("long-enough-1")
    assert capsys.readouterr().out.strip() == f"created user {user.pk} ops@example.com"


def test_user_create_refuses_duplicate(capsys, make_user):
    make_user(email="ops@example.com")
    assert main(["user", "create", "--email", "ops@example.com", "--password", "long-enough-1"]) == 2
    assert "Email is already taken" in capsys.readouterr().err
    assert User.objects.count() == 1


def test_token_create_prints_token_alone_on_last_line(capsys, client):
    assert main(["token", "create", "--name", "paywall", "--endpoint", "users_email"]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    row = ApiToken.objects.get(name="paywall")
    assert row.token_hash == services.hash_token(token) and row.endpoints == ["users_email"]
    ok = client.post("/api/v1/users/email", {"email": "a@example.com"}, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert ok.status_code == 200
    refused = client.post("/api/v1/users/create", {"email": "a@example.com"}, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert refused.status_code == 403


def test_token_create_all(capsys):
    assert main(["token", "create", "--name", "ops", "--all"]) == 0
    assert ApiToken.objects.get(name="ops").all_endpoints is True


def test_token_create_needs_a_scope_and_known_endpoints(capsys):
    assert main(["token", "create", "--name", "x"]) == 2
    assert main(["token", "create", "--name", "x", "--endpoint", "nope"]) == 2
    assert "Unknown endpoints: nope" in capsys.readouterr().err
    assert not ApiToken.objects.exists()


def test_token_endpoints_lists_api_token_operations(capsys):
    main(["token", "endpoints"])
    listed = capsys.readouterr().out.split()
    assert "users_create" in listed and "users_email" in listed
    assert "users_login" not in listed  # not an API-token endpoint


def test_catalog_load_ok_and_error(tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text("content_access:\n  - name: web\n")
    assert main(["catalog", "load", str(good)]) == 0
    assert "content_access: 1 created" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("content_access:\n  - name: print\n    bogus: 1\n")
    assert main(["catalog", "load", str(bad)]) == 2
    assert f"{bad}:3: content_access: 'bogus': unknown key (nothing was written)" in capsys.readouterr().err
    assert list(ContentAccess.objects.values_list("name", flat=True)) == ["web"]


def test_prepare_loads_demo_and_creates_admin_once(capsys, monkeypatch):
    monkeypatch.setenv("MASTHEAD_ADMIN_EMAIL", "chief@example.com")
    monkeypatch.delenv("MASTHEAD_ADMIN_PASSWORD", raising=False)
    prepare(demo=True)
    out = capsys.readouterr().out
    password = out.split("Admin login: chief@example.com / ")[1].split()[0]
    admin = User.objects.get(email="chief@example.com")
    assert admin.is_superuser and admin.check_password(password)
    assert ContentAccess.objects.count() == 4
    reader = User.objects.get(email="reader@example.com")
    subscription = reader.subscriptions.get()
    assert (subscription.subscription_type.code, subscription.is_paid, subscription.is_recurrent) == (
        "web_month", True, True)
    assert list(Payment.objects.filter(user=reader).values_list("status", "subscription_id")) == [
        ("paid", subscription.pk)]
    assert RecurrentPayment.objects.get(user=reader).state == "active"
    family = User.objects.get(email="family@example.com").subscriptions.get()
    assert family.subscription_type.code == "family_year"
    assert list(family.family_requests.values_list("status", flat=True)) == ["created"] * 5
    users = User.objects.count()
    prepare(demo=True)
    assert "existing account, password unchanged" in capsys.readouterr().out
    assert User.objects.count() == users


def test_prepare_without_demo(monkeypatch, capsys):
    monkeypatch.setenv("MASTHEAD_ADMIN_PASSWORD", "given-password-1")
    prepare(demo=False)
    assert not ContentAccess.objects.exists()
    assert User.objects.get().check_password("given-password-1")
    assert "(from MASTHEAD_ADMIN_PASSWORD)" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [[], ["serve"], ["worker"], ["user", "create"], ["token", "create"],
                                  ["catalog", "load"]])
def test_help_everywhere(argv):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([*argv, "--help"])
    assert exc.value.code == 0


def test_console_script_runs(tmp_path):
    result = subprocess.run([sys.executable, "-m", "masthead", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "serve" in result.stdout
