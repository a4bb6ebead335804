"""What the databases can store as text: no NUL (PostgreSQL text and jsonb refuse it) and no
lone surrogate (not encodable as UTF-8), anywhere in a string or a JSON-like value."""

from __future__ import annotations

import re
from typing import Final

from gov_pipeline.domain.errors import InvalidInputError

_UNSTORABLE: Final = re.compile("[\x00\ud800-\udfff]")
_MAX_DEPTH: Final = 100


def unstorable_reason(value: object) -> str | None:
    """Why `value` (a string, or lists and mappings of them) cannot be stored, or None."""
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            found = _UNSTORABLE.search(item)
            if found is None:
                continue
            if found.group() == "\x00":
                return "contains a NUL character, which text cannot hold"
            return f"contains a lone surrogate (U+{ord(found.group()):04X}), which is not UTF-8"
        if depth >= _MAX_DEPTH:
            if isinstance(item, dict | list | tuple):
                return "is nested too deeply"
            continue
        if isinstance(item, dict):
            stack += [(part, depth + 1) for pair in item.items() for part in pair]
        elif isinstance(item, list | tuple):
            stack += [(part, depth + 1) for part in item]
    return None


def check_storable(field: str, value: object) -> None:
    """Raise if `value` cannot be stored.

    Raises:
        InvalidInputError: naming `field`, when `value` holds NUL or a lone surrogate.
    """
    reason = unstorable_reason(value)
    if reason is not None:
        raise InvalidInputError(field, reason)
