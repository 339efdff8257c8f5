"""`authz envoy-config`: print an Envoy bootstrap (or Istio config) that uses this service."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys

from authz.addresses import AddressError
from authz.commands._output import add_output_argument, write_output
from authz.config_checks import Invalid
from authz.config_checks import path_prefix as check_path_prefix
from authz.envoy_bootstrap import (
    BootstrapOptions,
    TlsFiles,
    bootstrap,
    ecds_files,
    parse_endpoint,
    parse_route_context,
)
from authz.envoy_http import HTTP_BOOTSTRAP_NOTES, http_bootstrap
from authz.envoy_istio import (
    IstioOptions,
    istio_authorization_policy,
    istio_envoy_filter,
    istio_mesh_config,
    parse_selector,
)
from authz.envoy_tls import UpstreamTls, istio_destination_rule
from authz.envoy_yaml import BOOTSTRAP_NOTES, render_yaml

ISTIO_TLS_HEADER = (
    "Only for a service the mesh does not reach: when the authz pods have sidecars, the mesh\n"
    "already encrypts and authenticates the Check calls (auto mTLS; make it STRICT with a\n"
    "PeerAuthentication) and the service serves plaintext to its own sidecar: do not apply\n"
    "this. Otherwise every sidecar originates TLS to the service with these mounted files."
)

NAME = "envoy-config"
HELP = "print an Envoy v3 bootstrap (or, with --istio, Istio config) that protects an upstream"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--authz",
        action="append",
        metavar="ADDR",
        help="this service: HOST:PORT or unix:/path; repeat for every worker or replica "
        "(default: 127.0.0.1:9191, with --http 127.0.0.1:9292)",
    )
    parser.add_argument(
        "--listen", type=int, default=8080, metavar="PORT", help="Envoy's port (8080)"
    )
    parser.add_argument(
        "--listen-address", default="0.0.0.0", metavar="IP", help="Envoy's address (0.0.0.0)"
    )
    parser.add_argument(
        "--upstream", default="127.0.0.1:8000", metavar="HOST:PORT", help="the protected service"
    )
    parser.add_argument("--admin", type=int, default=9901, metavar="PORT", help="Envoy admin port")
    parser.add_argument(
        "--admin-address",
        default="127.0.0.1",
        metavar="IP",
        help="Envoy admin address (127.0.0.1; the admin API can change Envoy's state, so expose "
        "it only on a private network, e.g. for a Prometheus scrape in docker-compose)",
    )
    parser.add_argument(
        "--timeout-ms", type=int, default=500, help="ext_authz check timeout in ms (500)"
    )
    native = parser.add_argument_group("Envoy's own filters (authz export envoy)")
    native.add_argument(
        "--native",
        metavar="DIR",
        help="Envoy enforces the filters `authz serve --export-envoy DIR` writes (ECDS files, "
        "reloaded when they change); ext_authz (--authz) only for hosts they leave to it",
    )
    parser.add_argument(
        "--route-context",
        action="append",
        default=[],
        metavar="PREFIX:KEY=VALUE[,...]",
        help="add a route for PREFIX whose checks carry these context_extensions "
        "(ExtAuthzPerRoute), read by `when: [{context: KEY, ...}]`; repeatable",
    )
    http = parser.add_argument_group("HTTP mode (authz serve --http-listen)")
    http.add_argument(
        "--http",
        action="store_true",
        help="ext_authz over HTTP (http_service) to the service's --http-listen addresses "
        "(--authz), instead of gRPC",
    )
    http.add_argument(
        "--path-prefix",
        default="",
        metavar="PREFIX",
        help="http_service path_prefix (give the service the same --http-path-prefix)",
    )
    http.add_argument(
        "--readyz-port",
        action="append",
        type=int,
        metavar="PORT",
        help="the admin port (authz serve --admin) of each --authz endpoint, in order: Envoy "
        "health-checks its /readyz (default: no active health check)",
    )
    tls = parser.add_argument_group("downstream mTLS")
    tls.add_argument("--mtls", action="store_true", help="require client certificates")
    tls.add_argument("--server-cert", metavar="PEM")
    tls.add_argument("--server-key", metavar="PEM")
    tls.add_argument("--client-ca", metavar="PEM", help="CAs that issue client certificates")
    upstream_tls = parser.add_argument_group(
        "TLS to this service (authz serve --tls-cert; every mode, Istio included)"
    )
    upstream_tls.add_argument(
        "--authz-ca", metavar="PEM", help="verify the service with these CAs: turns TLS on"
    )
    upstream_tls.add_argument(
        "--authz-sds",
        metavar="DIR",
        help="or: the CAs and Envoy's certificate from the SDS files authz-ca.yaml and "
        "authz-client.yaml in DIR, re-read when they rotate: turns mutual TLS on",
    )
    upstream_tls.add_argument(
        "--authz-san",
        action="append",
        default=[],
        metavar="NAME",
        help="the service's expected SAN (spiffe://... URI, else DNS name); repeatable",
    )
    upstream_tls.add_argument(
        "--authz-client-cert", metavar="PEM", help="with --authz-ca: Envoy's own certificate"
    )
    upstream_tls.add_argument("--authz-client-key", metavar="PEM")
    upstream_tls.add_argument("--authz-sni", metavar="NAME", help="SNI sent to the service")
    istio = parser.add_argument_group("Istio")
    istio.add_argument(
        "--istio",
        action="store_true",
        help="print the MeshConfig extensionProviders entry and a CUSTOM AuthorizationPolicy",
    )
    istio.add_argument("--istio-provider", default="authz", metavar="NAME")
    istio.add_argument("--istio-service", default="authz.authz.svc.cluster.local", metavar="FQDN")
    istio.add_argument("--istio-port", type=int, default=9191)
    istio.add_argument("--istio-selector", default="app=shop", metavar="LABEL=VALUE[,...]")
    istio.add_argument("--istio-namespace", default="shop")
    add_output_argument(parser)


def upstream_tls(args: argparse.Namespace) -> UpstreamTls | None:
    """The `--authz-*` TLS flags (AddressError when they do not fit together)."""
    if args.authz_ca is None and args.authz_sds is None:
        given = [args.authz_san, args.authz_client_cert, args.authz_client_key, args.authz_sni]
        if any(given):
            raise AddressError("the --authz-* TLS flags need --authz-ca or --authz-sds")
        return None
    if args.authz_ca is not None and args.authz_sds is not None:
        raise AddressError("--authz-ca or --authz-sds (which holds the CAs too), not both")
    if (args.authz_client_cert is None) != (args.authz_client_key is None):
        raise AddressError("--authz-client-cert and --authz-client-key go together")
    if args.authz_sds is not None and args.authz_client_cert is not None:
        raise AddressError("--authz-sds holds Envoy's certificate: drop --authz-client-cert")
    if args.istio and args.authz_sds is not None:
        raise AddressError("--istio: give the sidecar's files with --authz-ca/--authz-client-*")
    # Istio's files are paths inside the sidecars, not on this machine: kept as given.
    here = (lambda path: path) if args.istio else _here
    return UpstreamTls(
        ca=here(args.authz_ca),
        sds_dir=_here(args.authz_sds),
        sans=tuple(args.authz_san),
        client_cert=here(args.authz_client_cert),
        client_key=here(args.authz_client_key),
        sni=args.authz_sni,
    )


def _here(path: str | None) -> str | None:
    """A file named on the command line, relative to the caller's directory: Envoy would read a
    relative name from its own working directory instead."""
    return os.path.abspath(path) if path else path


def build_text(args: argparse.Namespace) -> str:
    """The YAML to print; raises AddressError on bad flags."""
    check_flags(args)
    return istio_text(args) if args.istio else bootstrap_text(args)


def check_flags(args: argparse.Namespace) -> None:
    """Refuse what Envoy would refuse later, or read as nothing: raises AddressError."""
    ports = [("--listen", args.listen), ("--admin", args.admin), ("--istio-port", args.istio_port)]
    ports += [("--readyz-port", p) for p in args.readyz_port or ()]
    for flag, port in ports:
        if not 1 <= port <= 65535:
            raise AddressError(f"{flag} {port}: a port is 1-65535")
    for flag, ip in (
        ("--listen-address", args.listen_address),
        ("--admin-address", args.admin_address),
    ):
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise AddressError(f"{flag} {ip!r}: Envoy binds an IP address") from None
    if args.timeout_ms < 1:
        raise AddressError(f"--timeout-ms {args.timeout_ms}: at least 1")
    try:
        check_path_prefix(args.path_prefix)
    except Invalid as error:
        raise AddressError(f"--path-prefix {error}") from None
    if args.native is not None and not all(
        os.path.isfile(path) for path in ecds_files(args.native)
    ):
        raise AddressError(
            f"--native {args.native}: no exported filters there yet; `authz serve "
            f"--export-envoy {args.native}` writes them"
        )


def istio_text(args: argparse.Namespace) -> str:
    """The MeshConfig snippet, the CUSTOM AuthorizationPolicy and the EnvoyFilter with the
    request hardening, as three YAML documents."""
    options = IstioOptions(
        provider=args.istio_provider,
        service=args.istio_service,
        port=args.istio_port,
        timeout_ms=args.timeout_ms,
        namespace=args.istio_namespace,
        selector=parse_selector(args.istio_selector),
    )
    mesh = render_yaml(
        istio_mesh_config(options),
        header="MeshConfig: merge into the `mesh` key of the istio ConfigMap in istio-system\n"
        "(or spec.meshConfig of an IstioOperator, or meshConfig in the istiod Helm values).",
    )
    policy = render_yaml(
        istio_authorization_policy(options),
        header="Every request to the selected workloads is checked by the provider above.",
    )
    hardening = render_yaml(
        istio_envoy_filter(options),
        BOOTSTRAP_NOTES,
        header="The selected workloads' sidecars normalize paths, route on the host the service\n"
        "judges (port and trailing dot stripped) and reject underscore headers.",
    )
    text = mesh + "---\n" + policy + "---\n" + hardening
    tls = upstream_tls(args)
    if tls is not None:
        rule = istio_destination_rule(tls, service=args.istio_service, port=args.istio_port)
        text += "---\n" + render_yaml(rule, header=ISTIO_TLS_HEADER)
    return text


def bootstrap_text(args: argparse.Namespace) -> str:
    """The commented Envoy bootstrap."""
    tls: TlsFiles | None = None
    if args.mtls:
        missing = [
            flag
            for flag, value in (
                ("--server-cert", args.server_cert),
                ("--server-key", args.server_key),
                ("--client-ca", args.client_ca),
            )
            if not value
        ]
        if missing:
            raise AddressError("--mtls needs " + ", ".join(missing))
        files = (args.server_cert, args.server_key, args.client_ca)
        tls = TlsFiles(*(os.path.abspath(path) for path in files))  # see _here
    authz = args.authz or ["127.0.0.1:9292" if args.http else "127.0.0.1:9191"]
    options = BootstrapOptions(
        authz=tuple(parse_endpoint(a) for a in authz),
        upstream=parse_endpoint(args.upstream, allow_unix=False),
        listen_address=args.listen_address,
        listen_port=args.listen,
        admin_address=args.admin_address,
        admin_port=args.admin,
        tls=tls,
        authz_timeout_ms=args.timeout_ms,
        ecds_dir=args.native,
        route_contexts=tuple(parse_route_context(r) for r in args.route_context),
        authz_tls=upstream_tls(args),
    )
    checker = f"ext_authz{' over HTTP' if args.http else ''} ({', '.join(authz)})"
    if args.native:
        if args.http:
            raise AddressError("--native uses ext_authz over gRPC; drop --http")
        checker = f"the filters in {args.native} (authz serve --export-envoy), else {checker}"
    header = (
        f"Envoy v3 bootstrap generated by `authz envoy-config{' --http' if args.http else ''}`: "
        f"listener :{args.listen} -> {checker} -> upstream {args.upstream}."
        "\nRun: envoy -c this-file.yaml"
    )
    if args.http and args.route_context:
        # Envoy sends check_settings.context_extensions to a gRPC service only.
        raise AddressError("--route-context needs gRPC: context_extensions are not sent over HTTP")
    if args.http:
        config = http_bootstrap(
            options, path_prefix=args.path_prefix, readyz_ports=args.readyz_port or ()
        )
        return render_yaml(config, HTTP_BOOTSTRAP_NOTES, header)
    if args.path_prefix or args.readyz_port:
        raise AddressError("--path-prefix and --readyz-port are for --http")
    return render_yaml(bootstrap(options), BOOTSTRAP_NOTES, header)


def run(args: argparse.Namespace) -> int:
    try:
        text = build_text(args)
    except AddressError as error:
        print(f"authz envoy-config: {error}", file=sys.stderr)
        return 2
    return write_output(args, text)
