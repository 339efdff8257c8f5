"""Building a big policy set beside the serving thread without stalling it.

A reload builds on its own thread, but Python threads share one interpreter lock (the GIL),
and a big build holds it in ways no care in the build's own code avoids (measured with a
40,000-rule file: a check took 1 s, and 4 s under load, during a reload):

* the cyclic garbage collector: building allocates a million objects, which triggers full
  collections, and each one walks the whole heap with the lock held (0.5-2 s for a 40k-rule
  set). `building()` pauses collection while a set is built, and freezes what survives
  (`gc.freeze`): a policy set lives until the next reload and holds no reference cycles
  (a test pins that), so the collector never needs to walk it;
* thread switches: a thread waiting for the lock gets it only at the next switch interval
  (5 ms by default), and a check waits for it several times; `building()` shortens the interval
  to 0.5 ms for the duration of the build;
* freeing a big tree (a 40k-rule YAML document, or the set a reload replaced) is one
  uninterruptible cascade of 0.1-0.5 s; `release` frees it in slices instead.

What `building()` freezes besides the set is whatever else is alive at that moment, including
cyclic garbage the serving thread made while collection was paused (a collection runs first, so
only garbage of the build's own few seconds): a bounded amount per reload.
"""

from __future__ import annotations

import contextlib
import gc
import sys
import threading
from collections.abc import Iterator
from typing import Any

BUILD_SWITCH_INTERVAL = 0.0005  # seconds; CPython's default is 0.005

# Builds are serialized (re-entrant: a build may nest): each saves and restores process-wide
# settings.
_lock = threading.RLock()


@contextlib.contextmanager
def building(*, keep: bool = True) -> Iterator[None]:
    """Pause the garbage collector and shorten the switch interval while the block builds a
    policy set; with `keep`, freeze what survives a block that did not raise (see above)."""
    with _lock:
        enabled = gc.isenabled()
        interval = sys.getswitchinterval()
        if enabled:
            # Cheap (everything older is frozen already) and keeps what freezing pins small.
            gc.collect()
            gc.disable()
        sys.setswitchinterval(min(interval, BUILD_SWITCH_INTERVAL))
        try:
            yield
            if keep and enabled:
                gc.freeze()
        finally:
            sys.setswitchinterval(interval)
            if enabled:
                gc.enable()


def release(objects: list[Any], step: int = 2000) -> None:
    """Drop the references in `objects` (emptying it) `step` at a time, so freeing what they
    held happens in short steps the serving thread can run between. Choose `step` so a step
    frees a few thousand objects (a compiled rule is a few dozen).

    For a tree, list every node with each parent after its children (`yaml_source.flatten`):
    the steps drop from the end, so a node is freed while its children are still held by the
    list, and no step cascades further than one node.
    """
    while objects:
        del objects[-step:]
