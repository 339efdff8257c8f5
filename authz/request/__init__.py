"""The request grammar: what a request's path, host, method, headers, query and cookies mean.

Pure (no I/O, nothing from the wire or the policy language): both the doors (`authz.wire`)
and the policy language (`authz.policy`) read requests through these modules, so a fact has one
reader. Every reading of an ambiguous request is kept (docs/policy.md, "One rule for ambiguous
requests"): a `;param` path has two, a repeated header or query parameter one per value.
"""
