"""Catalog as code: reference data in one YAML file, loaded idempotently in one transaction.

The file is a mapping of sections; each section is a list of entries. Apps register their
sections (in ``AppConfig.ready()``) with a Pydantic model that validates an entry and a function
that creates or updates it::

    catalog.register_section("content_access", ContentAccessEntry, load_content_access, order=10)

Sections load in ``order`` so later ones can refer to earlier ones. Any error (unknown section,
unknown key, bad value, a reference to something missing) names the file line and nothing is
written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from django.db import transaction
from pydantic import BaseModel, ConfigDict, field_validator
from pydantic import ValidationError as PydanticValidationError

DEMO_CATALOG = Path(__file__).resolve().parent / "fixtures" / "demo.yaml"


class CatalogError(Exception):
    """A refused catalog; ``str()`` names the file and line, ``reason`` is the bare message."""

    def __init__(self, reason: str, line: int | None = None, path: str | None = None):
        super().__init__(reason)
        self.reason, self.line, self.path = reason, line, path

    def __str__(self):
        where = f"{self.path or 'catalog'}:{self.line}" if self.line else (self.path or "catalog")
        return f"{where}: {self.reason}"


class Entry(BaseModel):
    """Base of every section's entry model: unknown keys are errors, NUL characters are refused."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value):
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value


@dataclass
class Section:
    name: str
    model: type[Entry]
    load: Callable[[Entry], str]  # returns "created", "updated" or "unchanged"
    order: int


_sections: dict[str, Section] = {}


def register_section(name: str, model: type[Entry], load: Callable[[Entry], str], *, order: int = 100) -> None:
    _sections[name] = Section(name, model, load, order)


def sections() -> list[Section]:
    return sorted(_sections.values(), key=lambda s: (s.order, s.name))


# --- YAML with line numbers -------------------------------------------------------------------


class _Node(dict):
    """A YAML mapping that remembers the line of itself and of each key."""

    line: int = 0
    key_lines: dict


class _LineLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader, node, deep=False):
    loader.flatten_mapping(node)
    mapping = _Node()
    mapping.line = node.start_mark.line + 1
    mapping.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in mapping:
            raise CatalogError(f"duplicate key '{key}'", key_node.start_mark.line + 1)
        mapping[key] = loader.construct_object(value_node, deep=deep)
        mapping.key_lines[key] = key_node.start_mark.line + 1
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _error_line(entry: _Node, loc: tuple) -> int:
    node, line = entry, entry.line
    for part in loc:
        if isinstance(node, _Node) and part in node.key_lines:
            line = node.key_lines[part]
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
            line = getattr(node, "line", line)
        else:
            break
    return line


@dataclass
class LoadReport:
    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, section: str, outcome: str) -> None:
        self.counts.setdefault(section, {"created": 0, "updated": 0, "unchanged": 0})[outcome] += 1

    def summary(self) -> str:
        return "; ".join(
            f"{name}: {c['created']} created, {c['updated']} updated, {c['unchanged']} unchanged"
            for name, c in self.counts.items()
        ) or "nothing to load"


def parse(text: str, path: str | None = None) -> list[tuple[Section, Entry, _Node]]:
    """Validate the whole file; returns the entries in load order, or raises CatalogError."""
    try:
        document = yaml.load(text, Loader=_LineLoader)  # noqa: S506 (a SafeLoader subclass)
    except CatalogError as exc:
        raise CatalogError(exc.reason, exc.line, path) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise CatalogError(f"not valid YAML: {getattr(exc, 'problem', exc)}",
                           mark.line + 1 if mark else None, path) from exc
    if document is None:
        return []
    if not isinstance(document, _Node):
        raise CatalogError("the catalog must be a mapping of sections", 1, path)
    entries = []
    for name, items in document.items():
        line = document.key_lines[name]
        section = _sections.get(name)
        if section is None:
            known = ", ".join(s.name for s in sections())
            raise CatalogError(f"unknown section '{name}' (known: {known})", line, path)
        if items is None:
            continue
        if not isinstance(items, list):
            raise CatalogError(f"section '{name}' must be a list of entries", line, path)
        for item in items:
            if not isinstance(item, _Node):
                raise CatalogError(f"each entry of '{name}' must be a mapping", line, path)
            try:
                entries.append((section, section.model.model_validate(_plain(item)), item))
            except PydanticValidationError as exc:
                first = exc.errors()[0]
                loc = tuple(first["loc"])
                label = ".".join(str(p) for p in loc) or name
                message = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
                raise CatalogError(f"{name}: '{label}': {message}", _error_line(item, loc), path) from exc
    entries.sort(key=lambda e: (e[0].order, e[0].name))
    return entries


@transaction.atomic
def load(text: str, path: str | None = None) -> LoadReport:
    """Create or update everything in the catalog, all or nothing."""
    report = LoadReport()
    for section, entry, node in parse(text, path):
        try:
            outcome = section.load(entry)
        except CatalogError as exc:
            raise CatalogError(exc.reason, exc.line or node.line, path) from exc
        report.add(section.name, outcome)
    return report


def load_file(path: str | Path) -> LoadReport:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError(f"cannot read file: {exc.strerror}", None, str(path)) from exc
    return load(text, str(path))


def apply_fields(obj, values: dict) -> bool:
    """Set ``values`` on ``obj``; True when anything changed."""
    changed = False
    for name, value in values.items():
        if getattr(obj, name) != value:
            setattr(obj, name, value)
            changed = True
    return changed
