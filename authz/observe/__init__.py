"""Operations: the decision log, Prometheus metrics and the admin endpoint (health, readiness).

Both the decision log and the metrics are `authz.server.Observer`s: they are called after every
check and must never block or fail it.
"""

from __future__ import annotations

from authz.observe.admin import AdminServer, Readiness, readiness_check
from authz.observe.decision_log import SECRET_HEADERS, DecisionLog, decision_record, token_headers
from authz.observe.metrics import Metrics

__all__ = [
    "SECRET_HEADERS",
    "AdminServer",
    "DecisionLog",
    "Metrics",
    "Readiness",
    "decision_record",
    "readiness_check",
    "token_headers",
]
