"""Every state-changing operation on users, their passwords and their tokens."""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.utils.translation import gettext as _

from masthead.core import clock
from masthead.core.events import Event, emit
from masthead.users import queries
from masthead.users.models import AccessToken, ApiToken, DeviceToken, User
from masthead.users.phones import InvalidPhoneNumber, normalize_phone

MAX_PASSWORD_LENGTH = 4096


# --- events ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class UserCreated(Event):
    user_id: int
    source: str


@dataclass(frozen=True, kw_only=True)
class UserLoggedIn(Event):
    user_id: int
    source: str


# --- errors ---------------------------------------------------------------------------------


class UserError(Exception):
    """A refused user operation; ``code`` is the machine code the API answers with."""

    def __init__(self, code: str, message: str, field: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


class TokenRejected(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# --- users ----------------------------------------------------------------------------------


def normalize_email(email: str) -> str:
    email = User.objects.normalize_email(email)
    try:
        validate_email(email)
    except ValidationError as exc:
        raise UserError("invalid_email", _("Invalid email"), "email") from exc
    return email


def find_user_by_email(email: str) -> User | None:
    return User.objects.filter(email=User.objects.normalize_email(email)).first()


#: other ways to name an account at login (mobiletech adds phone numbers): ``fn(identifier)`` → User or None
LOGIN_RESOLVERS: list = []


def find_user(identifier: str) -> User | None:
    """The account an identifier given at login names: its e-mail, else what a resolver finds."""
    user = find_user_by_email(identifier)
    for resolver in LOGIN_RESOLVERS:
        if user is not None:
            break
        user = resolver(identifier)
    return user


@transaction.atomic
def create_user(*, email: str, password: str | None = None, first_name: str = "", last_name: str = "",
                public_name: str = "", phone_number: str = "", locale: str = "en", source: str = "",
                is_staff: bool = False, is_superuser: bool = False, legacy_password_hash: str = "",
                confirmed: bool = False) -> User:
    """Create a user. Without a password (and no legacy hash) the account cannot log in yet."""
    email = normalize_email(email)
    if locale not in dict(settings.LANGUAGES):
        raise UserError("invalid_locale", _("Unknown language: %(locale)s") % {"locale": locale}, "locale")
    if phone_number:
        try:
            phone_number = normalize_phone(phone_number)
        except InvalidPhoneNumber as exc:
            raise UserError("invalid_phone_number", str(exc), "phone_number") from exc
    for field, value, limit in (("first_name", first_name, 150), ("last_name", last_name, 150),
                                ("public_name", public_name, 255), ("source", source, 100)):
        if len(value) > limit:
            raise UserError("invalid_input", _("%(field)s is longer than %(limit)d characters")
                            % {"field": field, "limit": limit}, field)
    if password is not None and not (0 < len(password) <= MAX_PASSWORD_LENGTH):
        raise UserError("invalid_password", _("Invalid password"), "password")
    user = User(email=email, first_name=first_name, last_name=last_name, public_name=public_name,
                phone_number=phone_number, locale=locale, source=source, is_staff=is_staff or is_superuser,
                is_superuser=is_superuser, confirmed_at=clock.now() if confirmed else None)
    if legacy_password_hash:
        user.password = f"bcrypt_php${legacy_password_hash}"
    else:
        user.set_password(password)
    try:
        with transaction.atomic():
            user.save()
    except IntegrityError as exc:
        raise UserError("email_taken", _("Email is already taken"), "email") from exc
    emit(UserCreated(user_id=user.pk, source=source))
    return user


@transaction.atomic
def register(**fields) -> tuple[User, str]:
    """A new user (see create_user) and a user token for it, both or neither (users/create API)."""
    user = create_user(**fields)
    token, _access_token = issue_access_token(user=user, source="api")
    return user, token


@transaction.atomic
def set_password(*, user: User, password: str) -> User:
    if not (0 < len(password) <= MAX_PASSWORD_LENGTH):
        raise UserError("invalid_password", _("Invalid password"), "password")
    user.set_password(password)
    user.save(update_fields=["password", "updated_at"])
    return user


@dataclass(frozen=True)
class LoginResult:
    user: User
    token: str
    access_token: AccessToken


def check_credentials(*, email: str, password: str) -> User:
    """The active user with these credentials, or UserError with REMP's codes (R-AUTH-6).

    A legacy bcrypt hash that matches is rehashed to Argon2 here (Django's check_password does it).
    """
    user = find_user(email) if len(email) <= 254 else None
    if user is None or not user.is_active:
        # Hash anyway so an unknown address takes as long as a wrong password.
        User().set_password(password[:MAX_PASSWORD_LENGTH])
        raise UserError("identity_not_found", _(
            "Email you entered doesn't match our records. Please log in as you would on the website."))
    if len(password) > MAX_PASSWORD_LENGTH or not user.check_password(password):
        raise UserError("invalid_credential", _(
            "The password you entered doesn't match our records. Please log in as you would on the website."))
    return user


@transaction.atomic
def login(*, email: str, password: str, source: str = "", device_token: str | None = None) -> LoginResult:
    """Check credentials and issue a new access token, paired with the device if one is given."""
    device = None
    if device_token:
        device = DeviceToken.objects.filter(token_hash=hash_token(device_token)).first()
        if device is None:
            raise UserError("device_token_doesnt_exist", _("Device token doesn't exist"))
    user = check_credentials(email=email, password=password)
    token_source = f"api+{source}" if source else "api"
    token, access_token = issue_access_token(user=user, source=token_source, device=device)
    user.last_login = clock.now()
    user.save(update_fields=["last_login"])
    emit(UserLoggedIn(user_id=user.pk, source=token_source))
    return LoginResult(user=user, token=token, access_token=access_token)


# --- tokens ---------------------------------------------------------------------------------


def new_token() -> str:
    """32 lowercase hex characters (16 random bytes), REMP's token format."""
    return secrets.token_hex(16)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def issue_access_token(*, user: User, source: str = "", device: DeviceToken | None = None) -> tuple[str, AccessToken]:
    token = new_token()
    access_token = AccessToken.objects.create(user=user, token_hash=hash_token(token), token_hint=token[:6],
                                              source=source[:100], device_token=device)
    return token, access_token


@transaction.atomic
def revoke_access_tokens(*, tokens) -> int:
    """Revoke the given access tokens (a queryset or list); returns how many were still live."""
    ids = [t.pk for t in tokens]
    return AccessToken.objects.filter(pk__in=ids, revoked_at__isnull=True).update(revoked_at=clock.now())


@transaction.atomic
def logout(*, access_token: AccessToken) -> None:
    """Revoke this token; with a paired device, every token of that device goes too."""
    tokens = AccessToken.objects.filter(pk=access_token.pk)
    if access_token.device_token_id:
        tokens = AccessToken.objects.filter(device_token_id=access_token.device_token_id)
    tokens.filter(revoked_at__isnull=True).update(revoked_at=clock.now())


@transaction.atomic
def create_device_token(*, device_id: str) -> str:
    """A fresh device token for ``device_id`` (a device asking again gets a new one)."""
    if not device_id or len(device_id) > 255:
        raise UserError("invalid_device_id", _("Invalid device id"), "device_id")
    token = new_token()
    DeviceToken.objects.update_or_create(device_id=device_id, defaults={"token_hash": hash_token(token)})
    return token


def _last_use_resolution() -> timedelta:
    """last_used_at is written at most this often, not on every request."""
    return timedelta(seconds=settings.TOKEN_LAST_USED_RESOLUTION)


def authenticate_user_token(*, token: str) -> AccessToken:
    now = clock.now()
    user = queries.user_by_token_hash(hash_token(token), used_before=now - _last_use_resolution())
    if user is None:
        raise TokenRejected("Token doesn't exists")
    if not user.is_active:
        raise TokenRejected("Token isn't active")
    if user.token_stale:
        AccessToken.objects.filter(pk=user.token_id).update(last_used_at=now)
    return AccessToken(id=user.token_id, user=user, device_token_id=user.token_device_id)


def parse_ip_restrictions(value: str) -> list | None:
    """None for ``*`` (any address); else a list of networks. ValueError on a bad entry."""
    entries = value.replace(",", " ").split()
    if not entries or "*" in entries:
        return None
    return [ipaddress.ip_network(entry, strict=False) for entry in entries]


def ip_allowed(restrictions: str, ip: str) -> bool:
    try:
        networks = parse_ip_restrictions(restrictions)
    except ValueError:
        return False
    if networks is None:
        return True
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(address.version == net.version and address in net for net in networks)


def authenticate_api_token(*, token: str, operation_id: str, ip: str) -> ApiToken:
    """R-AUTH-4: token exists → active → client IP allowed → endpoint whitelisted."""
    try:
        api_token = ApiToken.objects.get(token_hash=hash_token(token))
    except ApiToken.DoesNotExist:
        raise TokenRejected("Token doesn't exists") from None
    if not api_token.active:
        raise TokenRejected("Token isn't active")
    if not ip_allowed(api_token.ip_restrictions, ip):
        raise TokenRejected("Invalid IP")
    if not (api_token.all_endpoints or operation_id in api_token.endpoints):
        raise TokenRejected(f"Token has no access to resource [{operation_id}]")
    now = clock.now()
    if api_token.last_used_at is None or now - api_token.last_used_at >= _last_use_resolution():
        ApiToken.objects.filter(pk=api_token.pk).update(last_used_at=now)
    return api_token


def _check_api_token_fields(*, name: str, endpoints: list[str], ip_restrictions: str) -> None:
    from masthead.core.api import api_token_operations

    if not name or len(name) > 100:
        raise UserError("invalid_name", _("A token needs a name of at most 100 characters."), "name")
    unknown = sorted(set(endpoints) - set(api_token_operations()))
    if unknown:
        raise UserError("unknown_endpoint", _("Unknown endpoints: %(names)s") % {"names": ", ".join(unknown)},
                        "endpoints")
    try:
        parse_ip_restrictions(ip_restrictions)
    except ValueError as exc:
        raise UserError("invalid_ip_restrictions", str(exc), "ip_restrictions") from exc


@transaction.atomic
def create_api_token(*, name: str, endpoints: list[str] | None = None, all_endpoints: bool = False,
                     ip_restrictions: str = "*", active: bool = True) -> tuple[str, ApiToken]:
    """A new API token; returns the plain token (shown once) and the row holding its hash."""
    endpoints = sorted(set(endpoints or []))
    _check_api_token_fields(name=name, endpoints=endpoints, ip_restrictions=ip_restrictions)
    token = new_token()
    try:
        with transaction.atomic():
            api_token = ApiToken.objects.create(name=name, token_hash=hash_token(token), token_hint=token[:6],
                                                endpoints=endpoints, all_endpoints=all_endpoints,
                                                ip_restrictions=ip_restrictions, active=active)
    except IntegrityError as exc:
        raise UserError("name_taken", _("A token with this name already exists."), "name") from exc
    return token, api_token


@transaction.atomic
def update_api_token(*, api_token: ApiToken, name: str, endpoints: list[str], all_endpoints: bool,
                     ip_restrictions: str, active: bool) -> ApiToken:
    endpoints = sorted(set(endpoints))
    _check_api_token_fields(name=name, endpoints=endpoints, ip_restrictions=ip_restrictions)
    api_token.name, api_token.endpoints, api_token.all_endpoints = name, endpoints, all_endpoints
    api_token.ip_restrictions, api_token.active = ip_restrictions, active
    api_token.save()
    return api_token


@transaction.atomic
def delete_api_token(*, api_token: ApiToken) -> None:
    """Only an inactive token can be deleted (R-AUTH-4): deactivate it first."""
    if api_token.active:
        raise UserError("token_active", _("Deactivate the token before deleting it."))
    api_token.delete()


@transaction.atomic
def update_profile(*, user: User, locale: str) -> User:
    if locale not in dict(settings.LANGUAGES):
        raise UserError("invalid_locale", _("Unknown language: %(locale)s") % {"locale": locale}, "locale")
    user.locale = locale
    user.save(update_fields=["locale", "updated_at"])
    return user
