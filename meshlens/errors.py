"""The exceptions meshlens raises on purpose.

Every one of them is a user-facing problem: the command line prints its message on one line
and exits 1, the dashboard shows it as an error box. Anything else is a bug.

    MeshlensError                 base; message says what, where, and what to do
    ├── InputError                a file or line cannot be read (missing file, bad gzip, bad format)
    ├── UnknownNameError          no service / format / setting of that name; suggests look-alikes
    ├── QueryRejected             the SQL guard refused a statement
    └── ConfigError               a bad inventory, policy or settings file, or a bad option value
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class MeshlensError(Exception):
    """Base class: a problem the user can fix, with a one-line message."""


class InputError(MeshlensError):
    """An input file or line cannot be read."""


class ConfigError(MeshlensError):
    """A configuration file or option value is invalid."""


class QueryRejected(MeshlensError):
    """The SQL guard refused a statement."""


class UnknownNameError(MeshlensError):
    """A name (service, format, setting) that does not exist; suggests close matches."""

    def __init__(self, kind: str, name: str, known: Iterable[str]) -> None:
        self.kind, self.name = kind, name
        self.suggestions = did_you_mean(name, known)
        hint = f"; did you mean {' or '.join(self.suggestions)}?" if self.suggestions else ""
        super().__init__(f"no {kind} named {name}{hint}")


def did_you_mean(name: str, known: Iterable[str], *, limit: int = 3) -> list[str]:
    """Close matches of ``name`` among ``known``, case-insensitively, best first."""
    by_lower = {k.lower(): k for k in known}
    scored = sorted(
        ((difflib.SequenceMatcher(None, name.lower(), k).ratio(), k) for k in by_lower),
        reverse=True,
    )
    if not scored or scored[0][0] < 0.6:
        return []
    # Only the close contenders of the best match: "CartService" is no answer to "paymentservise".
    floor = max(0.6, scored[0][0] - 0.1)
    return [by_lower[k] for score, k in scored[:limit] if score >= floor]
