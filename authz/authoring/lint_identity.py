"""Lint findings about introspection providers (called by `authz.authoring.lint.lint`).

* `introspection-secret-missing`: the client secret is not where the provider says (the file is
  missing or empty, the variable is unset in this environment): its tokens get 503 until it is.
* `introspection-plain-http`: the endpoint is plain http (allowed on loopback only, where the
  secret does not cross a network): fine for a local test endpoint, not for production.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from authz.authoring.lint_findings import Finding
from authz.policy.language.schema import FileSpec

CODES = {
    "introspection-secret-missing": "an introspection provider whose client secret is not there",
    "introspection-plain-http": "an introspection endpoint over plain http (loopback only)",
}


def introspection_findings(
    files: Iterable[FileSpec], environ: Mapping[str, str] = os.environ
) -> Iterable[Finding]:
    """Findings for every introspection provider of `files` (the validated specs), at the
    provider's line."""
    for f in files:
        lines = f.introspection_lines or (1,) * len(f.introspection_providers)
        for provider, line in zip(f.introspection_providers, lines, strict=True):
            subject = f"introspection {provider.name}"
            if not _has_secret(provider, environ):
                where = (
                    f"file {provider.secret_file}"
                    if provider.secret_file is not None
                    else f"environment variable {provider.secret_env}"
                )
                yield Finding(
                    f.file,
                    line,
                    "introspection-secret-missing",
                    subject,
                    f"the client secret ({where}) is missing or empty: its tokens are answered "
                    "503 introspection_unavailable until it is there",
                )
            if provider.endpoint.startswith("http://"):
                yield Finding(
                    f.file,
                    line,
                    "introspection-plain-http",
                    subject,
                    "the endpoint is plain http: use https outside a local test",
                )


def _has_secret(provider: Any, environ: Mapping[str, str]) -> bool:
    if provider.secret_file is not None:
        try:
            with open(provider.secret_file, encoding="utf-8") as handle:
                return bool(handle.read(4096).strip())
        except OSError:
            return False
    return bool(environ.get(provider.secret_env or "", "").strip())
