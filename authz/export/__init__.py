"""Compile a policy set to Envoy's own HTTP filters (jwt_authn + RBAC); see docs/export.md."""

from authz.export.envoy import EnvoyExport, Finding, export_envoy

__all__ = ["EnvoyExport", "Finding", "export_envoy"]
