"""What the policy-author commands print when a policy set or test file does not load, and
their counts of things."""

from __future__ import annotations

import sys

from authz.errors import PolicyError


def report_invalid(error: PolicyError, summary: str) -> int:
    """Print each problem on stdout, then `summary` on stderr; return the exit code, 1."""
    for problem in error.problems:
        print(problem)
    print(summary, file=sys.stderr)
    return 1


def counted(n: int, noun: str) -> str:
    """`1 file`, `2 files`."""
    return f"{n} {noun}{'' if n == 1 else 's'}"
