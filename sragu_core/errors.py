"""One exception type for bad input, so entry points can print one line and exit non-zero.

Every message names the field, the value it got, and what is allowed (docs/design.md §10).
"""

from __future__ import annotations

__all__ = ["ConfigError", "check"]


class ConfigError(ValueError):
    """Bad user input: ``field=value`` is not allowed; the message says what is."""

    def __init__(self, field: str, value: object, allowed: str):
        self.field, self.value, self.allowed = field, value, allowed
        super().__init__(f"{field}={value!r} is invalid: allowed {allowed}")

    def __reduce__(self):  # picklable with its three fields, so it crosses Ray's task boundary intact
        return (type(self), (self.field, self.value, self.allowed))


def check(ok: bool, field: str, value: object, allowed: str) -> None:
    """Raise ``ConfigError(field, value, allowed)`` unless ``ok``."""
    if not ok:
        raise ConfigError(field, value, allowed)
