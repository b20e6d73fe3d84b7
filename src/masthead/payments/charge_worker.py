"""Entry points of the charge run's worker processes (``CHARGE_RUN_WORKER_TYPE=process``).

A spawned process imports this module before Django is set up, so it imports nothing of Masthead at
module level: :func:`start` sets Django up on the database and settings of the run that spawned it.
"""

from __future__ import annotations

import os


def start(database: dict, overrides: dict) -> None:
    """Process initializer: Django on the parent's database (tests use ``test_<name>``) and settings."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "masthead.settings")
    import django
    from django.conf import settings

    settings.DATABASES["default"].update(database)
    for name, value in overrides.items():
        setattr(settings, name, value)
    django.setup()


def charge(claims: list) -> list[tuple[int, str]]:
    """Charge claimed rows (row id, claim stamp) one after another; (row id, outcome) pairs."""
    from masthead.payments.services import charge_chunk

    return charge_chunk(claims)
