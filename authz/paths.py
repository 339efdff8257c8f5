"""Moved to `authz.request.paths` (the request grammar); this name stays importable."""

from authz.request.paths import normalize_path as normalize_path
