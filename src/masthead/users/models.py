import uuid

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser, BaseUserManager
from django.contrib.auth.models import PermissionsMixin
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from masthead.users.phones import InvalidPhoneNumber, normalize_phone

LEGACY_BCRYPT_PREFIXES = ("$2y$", "$2a$", "$2b$")


def validate_phone(value: str) -> None:
    try:
        normalize_phone(value)
    except InvalidPhoneNumber as exc:
        raise ValidationError(str(exc)) from exc


class UserManager(BaseUserManager):
    use_in_migrations = True

    @classmethod
    def normalize_email(cls, email):
        return (email or "").strip().lower()

    def get_by_natural_key(self, username):
        return self.get(email=self.normalize_email(username))

    def create_user(self, email, password=None, **fields):
        # Used by Django internals (createsuperuser, tests of contrib apps); Masthead code calls
        # users.services.create_user.
        user = self.model(email=self.normalize_email(email), **fields)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_superuser(self, email, password=None, **fields):
        fields.update(is_staff=True, is_superuser=True)
        return self.create_user(email, password, **fields)


class User(AbstractBaseUser, PermissionsMixin):
    uuid = models.UUIDField(_("UUID"), default=uuid.uuid4, unique=True, editable=False)
    email = models.EmailField(_("e-mail"), max_length=254, unique=True)
    public_name = models.CharField(_("public name"), max_length=255, blank=True)
    first_name = models.CharField(_("first name"), max_length=150, blank=True)
    last_name = models.CharField(_("last name"), max_length=150, blank=True)
    phone_number = models.CharField(_("phone number"), max_length=20, blank=True, validators=[validate_phone],
                                    help_text=_("E.164, for example +421908123456"))
    locale = models.CharField(_("language"), max_length=10, choices=settings.LANGUAGES, default="en")
    is_active = models.BooleanField(_("active"), default=True)
    is_staff = models.BooleanField(_("staff"), default=False,
                                   help_text=_("Staff can log into the admin."))
    source = models.CharField(_("source"), max_length=100, blank=True,
                              help_text=_("Where the account came from: admin, api, import, demo..."))
    note = models.TextField(_("note"), blank=True)
    confirmed_at = models.DateTimeField(_("confirmed at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now, editable=False)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []

    class Meta:
        verbose_name = _("user")
        verbose_name_plural = _("users")
        constraints = [models.UniqueConstraint(Lower("email"), name="user_email_ci_unique")]
        indexes = [models.Index(fields=["phone_number"], name="user_phone")]

    def __str__(self):
        return self.email

    def clean(self):
        super().clean()
        self.email = User.objects.normalize_email(self.email)
        if self.phone_number:
            try:
                self.phone_number = normalize_phone(self.phone_number)
            except InvalidPhoneNumber as exc:
                raise ValidationError({"phone_number": str(exc)}) from exc

    def get_full_name(self):
        return " ".join(p for p in (self.first_name, self.last_name) if p) or self.public_name or self.email

    def get_short_name(self):
        return self.first_name or self.email

    def check_password(self, raw_password):
        # Hashes imported verbatim from REMP ($2y$...) get the legacy hasher's prefix on the fly;
        # the first successful check rehashes them to Argon2.
        if self.password.startswith(LEGACY_BCRYPT_PREFIXES):
            self.password = f"bcrypt_php${self.password}"
        return super().check_password(raw_password)


class UserMeta(models.Model):
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="meta", verbose_name=_("user"))
    key = models.CharField(_("key"), max_length=100)
    value = models.TextField(_("value"), blank=True)
    is_public = models.BooleanField(default=False, help_text=_("Public meta is returned by the user API."))

    class Meta:
        verbose_name = _("user meta")
        verbose_name_plural = _("user meta")
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="user_meta_key_unique")]


class Address(models.Model):
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="addresses", verbose_name=_("user"))
    type = models.CharField(_("type"), max_length=40, help_text=_("print, invoice, ..."))
    name = models.CharField(pgettext_lazy("person", "name"), max_length=255, blank=True)
    company_name = models.CharField(_("company name"), max_length=255, blank=True)
    street = models.CharField(_("street"), max_length=255, blank=True)
    number = models.CharField(_("number"), max_length=40, blank=True)
    zip = models.CharField(_("ZIP"), max_length=20, blank=True)
    city = models.CharField(_("city"), max_length=255, blank=True)
    country = models.CharField(_("country"), max_length=2, default="SK", help_text=_("ISO 3166-1 alpha-2"))
    phone = models.CharField(_("phone"), max_length=40, blank=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now, editable=False)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("address")
        verbose_name_plural = _("addresses")
        indexes = [models.Index(fields=["user", "type"], name="address_user_type")]

    def __str__(self):
        return ", ".join(p for p in (self.name, f"{self.street} {self.number}".strip(), self.zip, self.city) if p)


class ApiToken(models.Model):
    """A server-to-server credential. Only the SHA-256 of the token is stored (R-AUTH-4)."""

    name = models.CharField(_("name"), max_length=100, unique=True)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    token_hint = models.CharField(_("token starts with"), max_length=8, editable=False)
    active = models.BooleanField(_("active"), default=True)
    ip_restrictions = models.TextField(
        _("IP restrictions"), default="*",
        help_text=_("* for any address, or IPs and IPv4/IPv6 ranges (CIDR) separated by commas, spaces or lines."))
    all_endpoints = models.BooleanField(_("all endpoints"), default=False)
    endpoints = models.JSONField(_("endpoints"), default=list, blank=True,
                                 help_text=_("Operation ids this token may call."))
    meta = models.JSONField(_("meta"), default=dict, blank=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now, editable=False)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)
    last_used_at = models.DateTimeField(_("last used"), null=True, blank=True, editable=False)

    class Meta:
        verbose_name = _("API token")
        verbose_name_plural = _("API tokens")

    def __str__(self):
        return self.name


class DeviceToken(models.Model):
    """A mobile device, paired with the access tokens of the users who log in on it."""

    device_id = models.CharField(_("device id"), max_length=255, unique=True)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(_("created at"), default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(_("last used"), null=True, blank=True)

    class Meta:
        verbose_name = _("device token")
        verbose_name_plural = _("device tokens")


class AccessToken(models.Model):
    """A reader's token from users/login (R-AUTH-5). Only its SHA-256 is stored."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="access_tokens", verbose_name=_("user"))
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    token_hint = models.CharField(_("token starts with"), max_length=8, editable=False)
    source = models.CharField(_("source"), max_length=100, blank=True)
    device_token = models.ForeignKey(DeviceToken, null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="access_tokens", verbose_name=_("device"))
    created_at = models.DateTimeField(_("created at"), default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(_("last used"), null=True, blank=True)
    revoked_at = models.DateTimeField(_("revoked at"), null=True, blank=True)

    class Meta:
        verbose_name = _("user token")
        verbose_name_plural = _("user tokens")
        indexes = [models.Index(fields=["user", "-created_at"], name="access_token_user_time")]

    def __str__(self):
        return f"{self.token_hint}… ({self.user})"

    @property
    def is_revoked(self):
        return self.revoked_at is not None
