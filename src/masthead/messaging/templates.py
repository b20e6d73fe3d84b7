"""SMS templates: sandboxed Jinja2 (no attribute tricks, no undefined names, no autoescape)."""

from __future__ import annotations

from jinja2 import StrictUndefined, TemplateError, meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from masthead.messaging import segments

ENV = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)


class TemplateProblem(ValueError):
    pass


def variables(body: str) -> set[str]:
    try:
        return meta.find_undeclared_variables(ENV.parse(body))
    except TemplateError as exc:
        raise TemplateProblem(f"syntax error: {exc}") from exc


def render(body: str, params: dict) -> str:
    try:
        return ENV.from_string(body).render(params)
    except TemplateError as exc:
        raise TemplateProblem(str(exc)) from exc
    except (TypeError, ValueError, ArithmeticError, LookupError) as exc:  # {{ price + 1 }} with a text price
        raise TemplateProblem(f"{type(exc).__name__}: {exc}") from exc


def validate(body: str, parameters: list[str], sample: dict, max_segments: int) -> segments.Segmentation:
    """Syntax, names outside the declared parameters, and the segments of the sample rendering."""
    unknown = variables(body) - set(parameters)
    if unknown:
        raise TemplateProblem(f"unknown variables: {', '.join(sorted(unknown))}")
    missing = [name for name in parameters if name not in sample]
    text = render(body, {**{name: name for name in missing}, **sample})
    result = segments.segment(text)
    if result.segments > max_segments:
        raise TemplateProblem(f"{result.segments} segments with the sample parameters, at most {max_segments}")
    return result
