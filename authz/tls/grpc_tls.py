"""TLS for the gRPC door: grpcio's dynamic server credentials, and the allowed-client check.

grpcio asks the certificate-configuration fetcher at every new connection's handshake; the
fetcher answers None ("unchanged", nothing to build) until `ServingCertificates` holds new
material, then the new configuration once. Connections already open keep their session: a check
in flight never sees a rotation. grpc core's TLS is 1.2 and 1.3 only, with ECDHE-AEAD cipher
suites, and negotiates ALPN `h2`.

grpcio exposes no certificate-verification hook on the server, so the allowed identities are
checked on each call from the connection's verified certificate (`auth_context`), before the
call's handler runs; a refused call gets PERMISSION_DENIED, which Envoy's ext_authz turns into a
deny, never an allow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import grpc

from authz.tls.certs import ServingCertificates
from authz.tls.clients import ClientAllowList
from authz.tls.material import Material
from authz.tls.plan import GRPC


def _configuration(material: Material) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(material.key_pem, material.cert_pem)], root_certificates=material.client_ca_pem
    )


def grpc_server_credentials(certificates: ServingCertificates) -> grpc.ServerCredentials:
    """Credentials of the gRPC listeners that follow `certificates.current("grpc")`."""
    first = certificates.current(GRPC)
    served = [first]

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        material = certificates.current(GRPC)
        if material is served[0]:
            return None
        served[0] = material
        return _configuration(material)

    return grpc.dynamic_ssl_server_credentials(
        _configuration(first),
        fetch,
        require_client_authentication=first.client_ca_pem is not None,
    )


def _texts(values: Sequence[bytes] | None) -> list[str]:
    return [v.decode("utf-8", "replace") for v in values or ()]


def peer_permitted(allowed: ClientAllowList, auth: Mapping[str, Sequence[bytes]]) -> bool:
    """Whether the client certificate grpc verified (`ServicerContext.auth_context()`) has an
    allowed identity. grpc core lists the certificate's URI and DNS SANs under their own keys."""
    return allowed.permits(_texts(auth.get("peer_uri")), _texts(auth.get("peer_dns")))
