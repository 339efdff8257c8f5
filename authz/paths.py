"""Path normalization (POLICY.md, "Path normalization"). Placeholder signature: being written."""

from __future__ import annotations


def normalize_path(raw: str) -> tuple[str, str]:
    """Return (normalized path, query string without '?'); raise InvalidPath when unsafe."""
    raise NotImplementedError
