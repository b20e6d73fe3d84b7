"""Integration-test plumbing: show the logs of helper processes in a failing test's report."""

import pytest


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A fixture value with a ``report_sections()`` method gets its sections added to a failure report.

    Teardown output is not shown with a failing call, so a fixture that runs subprocesses (the Huey
    consumers) exposes their logs this way instead.
    """
    report = yield
    if report.failed and report.when in ("setup", "call"):
        for value in getattr(item, "funcargs", {}).values():
            sections = getattr(value, "report_sections", None)
            if callable(sections):
                for title, text in sections():
                    report.sections.append((title, text))
    return report
