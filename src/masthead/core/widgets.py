"""Widget registry: apps put panels into named placeholders without touching each other's templates.

Placeholders in use: ``admin.dashboard`` (admin index), ``admin.user.detail`` (admin user page,
context ``user_obj``), ``frontend.home`` (customer zone home). An app registers in its
``AppConfig.ready()``::

    widgets.register("admin.dashboard", "subscriptions.active", template="subscriptions/widgets/active.html",
                     context=active_counts, priority=100)

``context(request, **placeholder_context)`` returns the widget's template context, or ``None`` to
hide the widget. Lower priority renders first.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from django.template.loader import render_to_string
from django.utils.safestring import SafeString, mark_safe

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Widget:
    placeholder: str
    name: str
    template: str
    context: Callable[..., dict | None] | None
    priority: int


_registry: dict[str, dict[str, Widget]] = defaultdict(dict)


def register(placeholder: str, name: str, *, template: str, context=None, priority: int = 100) -> Widget:
    """Add (or replace, by name) a widget in ``placeholder``."""
    widget = Widget(placeholder, name, template, context, priority)
    _registry[placeholder][name] = widget
    return widget


def unregister(placeholder: str, name: str) -> None:
    _registry[placeholder].pop(name, None)


def widgets_for(placeholder: str) -> list[Widget]:
    return sorted(_registry[placeholder].values(), key=lambda w: (w.priority, w.name))


def render_placeholder(placeholder: str, request, **context) -> SafeString:
    parts = []
    for widget in widgets_for(placeholder):
        extra = widget.context(request, **context) if widget.context else {}
        if extra is None:
            continue
        html = render_to_string(widget.template, {**context, **extra, "widget": widget}, request=request)
        parts.append(f'<section class="mh-widget" data-widget="{widget.name}">{html}</section>')
    return mark_safe("".join(parts))
