"""Moved to `authz.request.syntax` (the request grammar); these names stay importable."""

from authz.request.syntax import SPIFFE_PREFIX as SPIFFE_PREFIX
from authz.request.syntax import TCHAR as TCHAR
from authz.request.syntax import TOKEN as TOKEN
from authz.request.syntax import UPPER_TCHAR as UPPER_TCHAR
from authz.request.syntax import without_spiffe_prefix as without_spiffe_prefix
