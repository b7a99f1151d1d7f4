"""The findings tier (``make findings``, marker ``findings``): each seed's published effect on a
small real-data run, asserted in its published direction with a margin.

Every module sets ``pytestmark = pytest.mark.findings``, trains its runs once (module-scoped
fixtures, one thread each, offline data; helpers in ``common.py``) and reports what it measured
with ``report(...)``; the numbers are printed in one table at the end of the session (they are
the README's findings rows). ``make test`` deselects this tier (``-m "not findings"``).
"""

from __future__ import annotations

from tests.findings.common import REPORTED


def pytest_terminal_summary(terminalreporter):
    if not REPORTED:
        return
    terminalreporter.section("findings: measured values")
    for seed, finding, numbers in REPORTED:
        values = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in numbers.items())
        terminalreporter.write_line(f"{seed:3} {finding}: {values}")
