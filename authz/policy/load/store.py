"""The policy set in force, replaced whole.

Readers take `store.current` once per request and use that object throughout, so a request
never sees half of an old set and half of a new one. Replacing is a single attribute
assignment (atomic in CPython), so readers never lock. Only a set that compiled without error
is ever swapped in: the last good set stays in force otherwise.
"""

from __future__ import annotations

import threading

from authz.policy.decide.compiler import PolicySet


class PolicyStore:
    """Holds the current compiled `PolicySet`."""

    __slots__ = ("_current", "_swap_lock")

    def __init__(self, initial: PolicySet):
        self._current = initial
        self._swap_lock = threading.Lock()  # writers only: keeps swap()'s return value exact

    @property
    def current(self) -> PolicySet:
        """The set in force; read it once per request."""
        return self._current

    def swap(self, new: PolicySet) -> PolicySet:
        """Put `new` in force and return the set it replaces."""
        with self._swap_lock:
            old, self._current = self._current, new
        return old
