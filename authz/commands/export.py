"""`authz export envoy DIR`: the policy set as Envoy's own jwt_authn + RBAC filters."""

from __future__ import annotations

import argparse
import gc
import json
import sys

from authz.commands._flags import add_policy_directory
from authz.commands._output import add_output_argument, write_output

NAME = "export"
HELP = "print the HTTP filters that enforce a policy set inside Envoy (jwt_authn + RBAC)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", choices=["envoy"], help="what to export to")
    add_policy_directory(parser)
    parser.add_argument("--format", choices=["yaml", "json"], default="yaml")
    parser.add_argument(
        "--hybrid",
        action="store_true",
        help="export what Envoy decides alone and keep ext_authz for the hosts it cannot",
    )
    parser.add_argument(
        "--svid-only",
        action="store_true",
        help="the mesh CA issues SVIDs alone (one URI SAN per certificate): allow rules may "
        "name principals and namespaces (Envoy's RBAC matches any SAN)",
    )
    parser.add_argument(
        "--jwks-ca",
        metavar="FILE",
        help="CA bundle Envoy checks remote JWKS servers against (default: the trust store the "
        "service's own fetch uses: SSL_CERT_FILE or the system's)",
    )
    add_output_argument(parser)


def run(args: argparse.Namespace) -> int:
    # A short command building only acyclic data (the load, ~10,000 messages, ~200,000 YAML
    # nodes): the cycle collector's passes over it were 40% of the YAML output's time (0.3 s
    # of CPU for 1,000 rules) and find nothing to free. Memory is the same without them.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _export(args)
    finally:
        if was_enabled:
            gc.enable()


def _export(args: argparse.Namespace) -> int:
    from authz.commands._problems import report_invalid
    from authz.envoy_bootstrap import REQUEST_HARDENING
    from authz.envoy_yaml import render_yaml
    from authz.errors import PolicyError
    from authz.export import export_envoy
    from authz.policy import load_policy_set

    try:
        policy_set = load_policy_set(args.directory)
    except PolicyError as error:
        return report_invalid(error, f"{args.directory}: invalid")
    result = export_envoy(
        policy_set, hybrid=args.hybrid, svid_only=args.svid_only, ca_file=args.jwks_ca
    )
    for finding in result.findings:
        print(f"authz export: {finding}", file=sys.stderr)
    if not result.exportable:
        print(
            "authz export: the set is not exportable as a whole (see above); "
            "--hybrid keeps ext_authz for the hosts that need it",
            file=sys.stderr,
        )
        return 1
    document = {
        # The HTTP connection manager settings the filters assume: they normalize the path the
        # way the service's rules expect it (authz/envoy_bootstrap.py REQUEST_HARDENING).
        "http_connection_manager": dict(REQUEST_HARDENING),
        "http_filters": result.filter_dicts(),
        # The clusters the filters name (remote JWKS servers), for static_resources.clusters.
        **({"clusters": result.clusters} if result.clusters else {}),
    }
    text = (
        # Compact: a 1,000-rule set is 9 MB indented and 1.6 MB not, and indenting costs more
        # than the export itself; the YAML form is the one to read.
        json.dumps(document, separators=(",", ":")) + "\n"
        if args.format == "json"
        else render_yaml(
            document,
            header=f"Envoy HTTP filters for {args.directory} (authz export envoy), in order, "
            "before the router.",
        )
    )
    return write_output(args, text)
