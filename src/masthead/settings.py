"""Masthead settings: every knob is an environment variable, read once here.

With nothing set, Masthead runs embedded: SQLite under ``var/``, ``SqliteHuey``, simulated
gateways. ``DATABASE_URL`` and ``REDIS_URL`` switch to PostgreSQL and ``RedisHuey``.
"""

import os
import sys
from pathlib import Path

import dj_database_url
from django.utils.translation import gettext_lazy as _

BASE_DIR = Path(__file__).resolve().parent
VAR_DIR = Path(os.environ.get("MASTHEAD_VAR_DIR", Path.cwd() / "var")).resolve()


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).replace(" ", ",").split(",") if item.strip()]


DEBUG = _env_bool("DEBUG", False)
# Under pytest: fast password hashing and Huey running tasks inline (HUEY_IMMEDIATE=0 overrides).
TESTING = _env_bool("MASTHEAD_TESTING", "pytest" in sys.modules)
SECRET_KEY = os.environ.get("SECRET_KEY") or "masthead-embedded-default-key-change-me-in-production-0123456789"
ALLOWED_HOSTS = _env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1],testserver")
CSRF_TRUSTED_ORIGINS = _env_list("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "masthead.core",
    "masthead.users",
    "masthead.subscriptions",
    "masthead.payments",
    "masthead.family",
    "masthead.messaging",
    "masthead.mobiletech",
    "masthead.customer",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "huey.contrib.djhuey",
    "ninja",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "masthead.core.middleware.ApiMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "masthead.users.middleware.UserLocaleMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "masthead.urls"
WSGI_APPLICATION = "masthead.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- database -------------------------------------------------------------------------------
VAR_DIR.mkdir(parents=True, exist_ok=True)  # SQLite database and/or SqliteHuey queue live here
DATABASE_URL = os.environ.get("DATABASE_URL", "")
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
    if _env_bool("DATABASE_PREPARED_STATEMENTS", True) and DATABASES["default"]["ENGINE"].endswith("postgresql"):
        # Server-side binding lets psycopg prepare statements it sees repeatedly, so the hot reads
        # (token lookup, a reader's subscriptions) skip planning. Set 0 behind a transaction pooler.
        DATABASES["default"].setdefault("OPTIONS", {}).update(server_side_binding=True, prepare_threshold=2)
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": VAR_DIR / "masthead.sqlite3",
            # Keep the connection (and its PRAGMAs) across requests: each process has its own.
            "CONN_MAX_AGE": 60,
            "OPTIONS": {
                # Django turns foreign keys on for every SQLite connection; WAL lets readers
                # work beside one writer; IMMEDIATE takes the write lock at BEGIN so two writers
                # queue on the busy timeout instead of failing on lock upgrade.
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=20000;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
            },
        }
    }
DB_IS_POSTGRES = DATABASES["default"]["ENGINE"].endswith("postgresql")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- background work ------------------------------------------------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "")
HUEY_IMMEDIATE = _env_bool("HUEY_IMMEDIATE", TESTING)
if REDIS_URL:
    HUEY = {
        "huey_class": "huey.RedisHuey",
        "name": os.environ.get("HUEY_NAME", "masthead"),
        "url": REDIS_URL,
        "immediate": HUEY_IMMEDIATE,
    }
else:
    HUEY = {
        "huey_class": "huey.SqliteHuey",
        "name": "masthead",
        "filename": str(VAR_DIR / "huey.sqlite3"),
        "immediate": HUEY_IMMEDIATE,
    }
HUEY["consumer"] = {"workers": int(os.environ.get("HUEY_WORKERS", "2")), "worker_type": "thread"}

# --- auth -----------------------------------------------------------------------------------
AUTH_USER_MODEL = "users.User"
AUTHENTICATION_BACKENDS = ["masthead.users.backends.LoginBackend"]

PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "masthead.users.hashers.LegacyBcryptPasswordHasher",
]
if TESTING:
    # Argon2 with minimal cost keeps the same code path but makes tests fast.
    PASSWORD_HASHERS[0] = "masthead.users.hashers.FastArgon2PasswordHasher"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 8}},
]
LOGIN_URL = "customer:login"
LOGIN_REDIRECT_URL = "customer:home"
LOGOUT_REDIRECT_URL = "customer:login"

# --- i18n / time ----------------------------------------------------------------------------
LANGUAGE_CODE = "en"
LANGUAGES = [("en", _("English")), ("sk", _("Slovak"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = os.environ.get("TIME_ZONE", "Europe/Bratislava")
USE_I18N = True
USE_TZ = True
PHONE_DEFAULT_REGION = os.environ.get("PHONE_DEFAULT_REGION", "SK")

# --- static ---------------------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
# The embedded server serves static files itself (no collectstatic needed).
SERVE_STATIC = _env_bool("MASTHEAD_SERVE_STATIC", True)

# --- API ------------------------------------------------------------------------------------
# Origins allowed to call /api/ from a browser; "*" allows any.
API_CORS_ORIGINS = _env_list("API_CORS_ORIGINS", "*")
API_CORS_MAX_AGE = int(os.environ.get("API_CORS_MAX_AGE", "3600"))
# Bodies larger than this are refused with 413 before any handler runs.
DATA_UPLOAD_MAX_MEMORY_SIZE = int(os.environ.get("API_MAX_BODY_BYTES", str(1024 * 1024)))
# A token's last-used time is written at most this often (seconds), not on every request.
TOKEN_LAST_USED_RESOLUTION = int(os.environ.get("TOKEN_LAST_USED_RESOLUTION", "60"))
# Number of trusted reverse proxies in front of Masthead (0: use REMOTE_ADDR as client IP).
TRUSTED_PROXY_COUNT = int(os.environ.get("TRUSTED_PROXY_COUNT", "0"))

# --- server ---------------------------------------------------------------------------------
HOST = os.environ.get("HOST", "127.0.0.1")
PORT = int(os.environ.get("PORT", "8000"))
WEB_WORKERS = int(os.environ.get("WEB_WORKERS", "2"))
HEARTBEAT_MINUTES = int(os.environ.get("HEARTBEAT_MINUTES", "1"))
VAT_DEFAULT = os.environ.get("VAT_DEFAULT", "23")  # percent, for a type's single default item (R-ST-2)
SUBSCRIPTION_SWEEP_MINUTES = int(os.environ.get("SUBSCRIPTION_SWEEP_MINUTES", "1"))
# Content access whose subscriptions extend_last_subscription ignores (R-EXT-6), e.g. "mobile".
EXTEND_LAST_IGNORED_ACCESS = _env_list("EXTEND_LAST_IGNORED_ACCESS", "")
PRINT_ACCESS_NAMES = _env_list("PRINT_ACCESS_NAMES", "print")  # dashboard: print subscribers without
PRINT_ADDRESS_TYPES = _env_list("PRINT_ADDRESS_TYPES", "print")  # ... an address of one of these types
# Recurring charges (R-REC-*): retry ladder of ISO-8601 durations (R-REC-10), delay after a gateway error
# (R-REC-13), global hours before the end to charge (R-REC-5; empty: 0), fast-charge guard (R-REC-7; 0 off),
# charge run period/look-ahead in minutes and its concurrent gateway calls, VAT % of recurrent donations.
RECURRENT_PAYMENT_CHARGES = os.environ.get("RECURRENT_PAYMENT_CHARGES", "PT15M, PT6H, PT6H, PT6H, PT6H")
RECURRENT_GATEWAY_FAIL_DELAY = os.environ.get("RECURRENT_GATEWAY_FAIL_DELAY", "PT1H")
RECURRENT_CHARGE_BEFORE_HOURS = os.environ.get("RECURRENT_CHARGE_BEFORE_HOURS", "")
FASTCHARGE_THRESHOLD_HOURS = int(os.environ.get("FASTCHARGE_THRESHOLD_HOURS", "24"))
CHARGE_RUN_MINUTES = int(os.environ.get("CHARGE_RUN_MINUTES", "15"))
CHARGE_RUN_WORKERS = int(os.environ.get("CHARGE_RUN_WORKERS", "4"))
CHARGE_RUN_WORKER_TYPE = os.environ.get("CHARGE_RUN_WORKER_TYPE", "thread")  # or "process": Python in parallel too
DONATION_VAT_RATE = os.environ.get("DONATION_VAT_RATE", "")
# fake_card simulator: latency per call and "<card number suffix>:<outcome>:<code>" rules
FAKE_CARD_LATENCY_MS = int(os.environ.get("FAKE_CARD_LATENCY_MS", "0"))
FAKE_CARD_DECLINES = os.environ.get("FAKE_CARD_DECLINES", "0002:fail_try:insufficient_funds,0069:fail_stop:expired_card,"
                                    "0119:error:gateway_unavailable,0077:pending:processing")

# Family subscriptions: a new parent starting within this many days of the previous one's end renews
# its children (R-FAM-22); whether a parent may activate a code of his own "copy" family type
# (R-FAM-11); the abusive-users widget flags readers with more than N codes in D days (R-FAM-33).
FAMILY_RENEWAL_GAP_DAYS = int(os.environ.get("FAMILY_RENEWAL_GAP_DAYS", "7"))
FAMILY_ALLOW_SELF_ACTIVATION = os.environ.get("FAMILY_ALLOW_SELF_ACTIVATION", "1") not in ("0", "false", "no")
FAMILY_ABUSE_THRESHOLD = int(os.environ.get("FAMILY_ABUSE_THRESHOLD", "10"))
FAMILY_ABUSE_DAYS = int(os.environ.get("FAMILY_ABUSE_DAYS", "30"))

# SMS messaging. SMS_GATEWAY: simulated (default), kannel or http. The dispatcher sends up to
# SMS_CONCURRENCY requests at once, at most SMS_RATE_PER_SECOND per gateway; transient failures
# retry after SMS_RETRY_DELAYS (ISO 8601 durations) and then fail; a message left "sending" by a
# killed worker is reclaimed after SMS_LEASE_SECONDS. Non-urgent notifications wait out the quiet
# hours (local time). Webhooks authenticate with SMS_WEBHOOK_SECRET (URL ?secret= or X-Webhook-Secret).
SMS_GATEWAY = os.environ.get("SMS_GATEWAY", "simulated")
SMS_SENDER = os.environ.get("SMS_SENDER", "Masthead")
SMS_CONCURRENCY = int(os.environ.get("SMS_CONCURRENCY", "64"))  # requests in flight: Kannel may take 40 ms
SMS_RATE_PER_SECOND = float(os.environ.get("SMS_RATE_PER_SECOND", "200"))
SMS_BATCH_SIZE = int(os.environ.get("SMS_BATCH_SIZE", "200"))
SMS_RETRY_DELAYS = os.environ.get("SMS_RETRY_DELAYS", "PT1M, PT5M, PT15M, PT1H")
SMS_LEASE_SECONDS = int(os.environ.get("SMS_LEASE_SECONDS", "120"))
SMS_DISPATCHER_LEASE_SECONDS = int(os.environ.get("SMS_DISPATCHER_LEASE_SECONDS", "30"))
SMS_VALIDITY_HOURS = int(os.environ.get("SMS_VALIDITY_HOURS", "48"))
SMS_QUIET_HOURS = os.environ.get("SMS_QUIET_HOURS", "21:00-08:00")
SMS_REPLY_WINDOW_HOURS = int(os.environ.get("SMS_REPLY_WINDOW_HOURS", "72"))
SMS_WEBHOOK_SECRET = os.environ.get("SMS_WEBHOOK_SECRET", "change-me-sms-webhook")
SMS_PUBLIC_URL = os.environ.get("SMS_PUBLIC_URL", "http://127.0.0.1:8000")  # how gateways reach our webhooks
SMS_DISPATCH_SECONDS = int(os.environ.get("SMS_DISPATCH_SECONDS", "50"))  # one dispatcher run's time budget
SMS_SIMULATED_DELIVERY_SECONDS = int(os.environ.get("SMS_SIMULATED_DELIVERY_SECONDS", "0"))
SMS_SIMULATED_REJECT = os.environ.get("SMS_SIMULATED_REJECT", r"^\+999")
SMS_SIMULATED_TRANSIENT = os.environ.get("SMS_SIMULATED_TRANSIENT", r"^\+998")
SMS_SIMULATED_FAIL = os.environ.get("SMS_SIMULATED_FAIL", r"^\+997")
KANNEL_SENDSMS_URL = os.environ.get("KANNEL_SENDSMS_URL", "http://127.0.0.1:13913/cgi-bin/sendsms")
KANNEL_USERNAME = os.environ.get("KANNEL_USERNAME", "crm")
KANNEL_PASSWORD = os.environ.get("KANNEL_PASSWORD", "secret")
KANNEL_TIMEOUT_SECONDS = float(os.environ.get("KANNEL_TIMEOUT_SECONDS", "10"))
SMS_HTTP_URL = os.environ.get("SMS_HTTP_URL", "")
SMS_HTTP_TOKEN = os.environ.get("SMS_HTTP_TOKEN", "")
SMS_HTTP_TIMEOUT_SECONDS = float(os.environ.get("SMS_HTTP_TIMEOUT_SECONDS", "10"))

# Premium SMS (Mobiletech). MOBILETECH_CLIENT: mock (default: records the message, reports D1) or
# http (the XML `send` command to MOBILETECH_GATEWAY_URL with a bearer token). The webhook checks
# MOBILETECH_WEBHOOK_SECRET (?secret= or X-Webhook-Secret; empty = none) and the optional source
# address allowlist. A recurring SMS charge with no success report within the pending timeout
# fails. Caps per charge and per number per calendar month (PSD2 limits for carrier billing).
MOBILETECH_CLIENT = os.environ.get("MOBILETECH_CLIENT", "mock")
MOBILETECH_GATEWAY_URL = os.environ.get("MOBILETECH_GATEWAY_URL", "")
MOBILETECH_TOKEN = os.environ.get("MOBILETECH_TOKEN", "")
MOBILETECH_TIMEOUT_SECONDS = float(os.environ.get("MOBILETECH_TIMEOUT_SECONDS", "5"))
MOBILETECH_WEBHOOK_SECRET = os.environ.get("MOBILETECH_WEBHOOK_SECRET", "")
MOBILETECH_ALLOWED_IPS = os.environ.get("MOBILETECH_ALLOWED_IPS", "")
MOBILETECH_MAX_BODY_BYTES = int(os.environ.get("MOBILETECH_MAX_BODY_BYTES", "65536"))
MOBILETECH_BILLKEY_FREE = os.environ.get("MOBILETECH_BILLKEY_FREE", "FREE")
MOBILETECH_SERV_ID = os.environ.get("MOBILETECH_SERV_ID", "")
MOBILETECH_SHORT_NUMBER = os.environ.get("MOBILETECH_SHORT_NUMBER", "")
MOBILETECH_PENDING_TIMEOUT_MINUTES = int(os.environ.get("MOBILETECH_PENDING_TIMEOUT_MINUTES", "15"))
MOBILETECH_CHARGE_CAP = os.environ.get("MOBILETECH_CHARGE_CAP", "50.00")
MOBILETECH_MONTHLY_CAP = os.environ.get("MOBILETECH_MONTHLY_CAP", "300.00")
MOBILETECH_RECEIPT_TEMPLATE = os.environ.get("MOBILETECH_RECEIPT_TEMPLATE", "receipt")
MOBILETECH_STOP_TEMPLATE = os.environ.get("MOBILETECH_STOP_TEMPLATE", "stop_confirmation")
MOBILETECH_TEST_TEMPLATE = os.environ.get("MOBILETECH_TEST_TEMPLATE", "")  # set: answer every inbound SMS
MOBILETECH_TEST_BILLKEY = os.environ.get("MOBILETECH_TEST_BILLKEY", "")

SESSION_COOKIE_HTTPONLY = True
# Flash messages can carry a new API token: keep them server-side, never in a cookie.
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"
X_FRAME_OPTIONS = "DENY"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"huey": {"level": "WARNING"}},
}
