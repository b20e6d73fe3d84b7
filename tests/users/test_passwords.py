"""Passwords: Argon2 for new hashes; legacy PHP bcrypt hashes verify and are rehashed on login."""

import bcrypt
import pytest

from masthead.users import services
from masthead.users.models import User

pytestmark = pytest.mark.django_db


def php_hash(password: str, prefix: bytes = b"$2y$") -> str:
    """What PHP's password_hash(PASSWORD_BCRYPT) stores: bcrypt with the $2y$ tag."""
    hashed = bcrypt.hashpw(password.encode()[:72], bcrypt.gensalt(rounds=4))
    return (prefix + hashed[4:]).decode()


def test_new_passwords_are_argon2(make_user):
    user = make_user(password="correct-horse-1")
    assert user.password.startswith("argon2$")


@pytest.mark.parametrize("prefix", [b"$2y$", b"$2a$", b"$2b$"])
def test_legacy_bcrypt_login_rehashes_to_argon2(client, make_user, prefix):
    legacy = php_hash("old-php-password", prefix)
    user = services.create_user(email="imported@example.com", legacy_password_hash=legacy, source="import")
    assert user.password == f"bcrypt_php${legacy}"

    response = client.post("/api/v1/users/login", {"email": "imported@example.com", "password": "old-php-password"})

    assert response.status_code == 200
    user.refresh_from_db()
    assert user.password.startswith("argon2$")
    assert user.check_password("old-php-password")


def test_raw_legacy_hash_written_by_an_import_also_verifies(client):
    user = services.create_user(email="raw@example.com", password="placeholder-1")
    User.objects.filter(pk=user.pk).update(password=php_hash("from-remp-db"))
    response = client.post("/api/v1/users/login", {"email": "raw@example.com", "password": "from-remp-db"})
    assert response.status_code == 200
    user.refresh_from_db()
    assert user.password.startswith("argon2$")


def test_legacy_wrong_password_keeps_the_legacy_hash(client):
    legacy = php_hash("old-php-password")
    services.create_user(email="imported@example.com", legacy_password_hash=legacy)
    response = client.post("/api/v1/users/login", {"email": "imported@example.com", "password": "nope"})
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_credential"
    assert User.objects.get(email="imported@example.com").password == f"bcrypt_php${legacy}"


def test_legacy_bcrypt_truncates_at_72_bytes_like_php():
    long_password = "é" * 40  # 80 bytes in UTF-8
    legacy = php_hash(long_password)
    user = services.create_user(email="long@example.com", legacy_password_hash=legacy)
    # PHP compares the first 72 bytes only: a password equal on those bytes verifies too
    assert User.objects.get(pk=user.pk).check_password(long_password.encode()[:72].decode() + "zzzz")


def test_legacy_hash_never_used_for_new_passwords(make_user):
    from masthead.users.hashers import LegacyBcryptPasswordHasher

    with pytest.raises(ValueError):
        LegacyBcryptPasswordHasher().encode("x", "")
