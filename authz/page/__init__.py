"""The decision page on the admin endpoint: "why was I denied?" from a decision id, in one step.

Routes (authz.page.routes), data (authz.page.views), HTML (authz.page.html), access
(authz.page.access):

    /                    the overview (revision, last reload, files, providers, store, chart)
    /decisions           the recent decisions (?id= &host= &principal= &reason= &status=)
    /decisions/ID        one decision, explained under the current policy set
    /api/, /api/decisions, /api/decisions/ID    the same data as JSON

Read-only (the admin endpoint answers GET and HEAD only); it holds only what the decision
log holds (authz.observe.recent). Bound on loopback it is open like the rest of the admin
endpoint; bound off loopback it needs `Authorization: Bearer <token>`, the token read from
`--admin-token-file` or the AUTHZ_ADMIN_TOKEN environment variable, and without a token it is
refused (`/metrics`, `/healthz` and `/readyz` stay open: Prometheus and Kubernetes call them).
"""
