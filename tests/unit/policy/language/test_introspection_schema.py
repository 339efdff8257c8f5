"""The `introspection` providers and `certificate_bound`: parsed into the spec, every mistake
named with its file and line, and the JSON Schema agreeing with the validator."""

from __future__ import annotations

import json

import jsonschema
import pytest
import yaml

from authz.authoring.json_schema import policy_schema
from authz.policy.language.spec import IntrospectionProvider, TokenLocation

from ..conftest import policy, problems

GOOD = """\
authentication:
  introspection:
    - name: corp
      endpoint: https://id.example.com/introspect
      issuer: https://id.example.com
      client_id: authz
      client_secret_env: INTROSPECT_SECRET
      from: [{cookie: session}]
      tokens: all
      audiences: [shop]
      timeout: 0.5
      cache: {max_ttl: 30, inactive_ttl: 2, entries: 100, bytes: 1048576}
      forward: true
      claims_to_headers: {sub: x-user}
      certificate_bound: true
  jwt:
    - issuer: https://jwt.example.com
      jwks_uri: https://jwt.example.com/k
      certificate_bound: true
"""


def test_a_provider_parses_into_the_spec() -> None:
    auth = policy(GOOD).files[0]
    (provider,) = auth.introspection_providers
    assert provider == IntrospectionProvider(
        "corp",
        "https://id.example.com/introspect",
        "https://id.example.com",
        "authz",
        secret_env="INTROSPECT_SECRET",
        locations=(TokenLocation(cookie="session"),),
        tokens="all",
        audiences=("shop",),
        timeout=0.5,
        cache_ttl=30.0,
        inactive_ttl=2.0,
        cache_entries=100,
        cache_bytes=1048576,
        forward=True,
        claims_to_headers=(("sub", "x-user"),),
        certificate_bound=True,
    )
    assert auth.jwt_providers[0].certificate_bound
    host = policy(GOOD).for_host("any.example.com")
    assert host is not None and host.authentication.token_providers[-1] == provider


def test_defaults() -> None:
    text = (
        "authentication:\n  introspection:\n    - {name: c, endpoint: 'http://127.0.0.1:9/i', "
        "issuer: i, client_id: a, client_secret_file: s.txt}\n"
    )
    (provider,) = policy(text).files[0].introspection_providers
    assert provider.cache_ttl == 60.0 and provider.timeout == 2.0 and provider.tokens == "opaque"
    assert provider.secret_file is not None and provider.secret_file.endswith("s.txt")
    assert provider.locations == (TokenLocation(header="authorization", prefix="Bearer "),)


BASE = "    - name: c\n      issuer: i\n      client_id: a\n"
ERRORS = [
    ("      endpoint: http://id.example.com/i\n      client_secret_env: S\n", 6, "use https"),
    ("      endpoint: http://localhost.evil.com/i\n      client_secret_env: S\n", 6, "use https"),
    ("      endpoint: https://x/i\n", 3, "exactly one of client_secret_file"),
    (
        "      endpoint: https://x/i\n      client_secret_env: S\n      client_secret_file: f\n",
        3,
        "exactly one of client_secret_file",
    ),
    ("      endpoint: https://x/i\n      client_secret_env: S\n      timeout: 0\n", 8, "timeout"),
    ("      endpoint: https://x/i\n      client_secret_env: S\n      timeout: 99\n", 8, "timeout"),
    ("      endpoint: https://x/i\n      client_secret_env: S\n      tokens: jwt\n", 8, "tokens"),
    (
        "      endpoint: https://x/i\n      client_secret_env: S\n      cache: {max_tll: 3}\n",
        8,
        "did you mean 'max_ttl'",
    ),
    (
        "      endpoint: https://x/i\n      client_secret_env: S\n      cache: {entries: 0}\n",
        8,
        "entries",
    ),
    (
        "      endpoint: https://x/i\n      client_secret_env: S\n      client_secret: hunter2\n",
        8,
        "unknown field 'client_secret'",
    ),
    ("      endpoint: https://x/i\n      client_secret_env: AUTHZ_SECRET\n", 7, "AUTHZ_*"),
    (
        "      endpoint: https://x/i\n      client_secret_env: S\n      certificate_bound: 1\n",
        8,
        "certificate_bound must be true or false",
    ),
]


@pytest.mark.parametrize(("extra", "line", "message"), ERRORS)
def test_mistakes_name_file_and_line(extra: str, line: int, message: str) -> None:
    text = "authentication:\n  introspection:\n" + BASE + extra
    found = problems(text, names=["bad.yaml"])
    assert any(p.file == "bad.yaml" and p.line == line and message in p.message for p in found), (
        found
    )
    # The JSON Schema refuses the same documents (an editor shows the error as you type).
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(yaml.safe_load(text), policy_schema())


def test_the_schema_accepts_the_good_file() -> None:
    jsonschema.validate(yaml.safe_load(GOOD), policy_schema())
    assert "introspection_provider" in json.dumps(policy_schema())


def test_two_different_providers_may_not_share_a_name() -> None:
    one = (
        "authentication:\n  introspection:\n    - {name: corp, endpoint: 'https://a/i', "
        "issuer: i, client_id: a, client_secret_env: S}\n"
    )
    other = one.replace("https://a/i", "https://b/i")
    found = problems(one, "hosts: [x.example.com]\n" + other, names=["a.yaml", "b.yaml"])
    assert any(p.file == "b.yaml" and p.line == 4 and "a.yaml:3" in p.message for p in found)
    # The same provider in two files is one provider.
    policy(one, "hosts: [x.example.com]\n" + one)
