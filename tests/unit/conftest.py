"""The unit tests run without Ray and without torch. Run on their own (``pytest tests/unit``), the
session fails, naming the first test that did it, when any of them loaded either."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

UNIT_TESTS = Path(__file__).resolve().parent
FORBIDDEN = ("torch", "ray")
_loaded_by: dict[str, str] = {}


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    for name in FORBIDDEN:
        if name in sys.modules and name not in _loaded_by:
            _loaded_by[name] = item.nodeid


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    only_units = bool(session.items) and all(Path(item.path).is_relative_to(UNIT_TESTS) for item in session.items)
    if only_units and _loaded_by and exitstatus == pytest.ExitCode.OK:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        for name, test in _loaded_by.items():
            reporter.write_line(f"tests/unit must not load {name}: {test} did", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
