"""Compile a policy set to Envoy's own HTTP filters (jwt_authn + RBAC); see docs/export.md."""

from authz.export.envoy import export_envoy
from authz.export.render import EnvoyExport, Finding

__all__ = ["EnvoyExport", "Finding", "export_envoy"]
