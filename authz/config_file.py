"""Settings from a YAML config file, `AUTHZ_*` environment variables and command-line flags.

Precedence, highest first: flags > environment > config file > defaults. Every value is
checked at start, and every problem is reported at once in one `ConfigError` that names where
the value came from (`authz.yaml:7: ...`, `AUTHZ_WORKERS: ...`, `--listen: ...`), so a
misconfigured pod fails on its first start with a message that says what to fix.

```yaml
# authz.yaml: every key is optional
listen: ["0.0.0.0:9191", "unix:/run/authz.sock"]   # or one string
admin: 0.0.0.0:9092            # /metrics, /healthz, /readyz; omit or null: off
policies: /etc/authz/policies
decision_log: "-"              # a file path, "-" for stdout; omit or null: off
log_headers: [user-agent, x-request-id]
headers: {principal: x-authz-principal, request_principal: x-authz-request-principal,
          decision_id: x-authz-decision-id}
trust_xfcc: false
ca_bundle: /etc/authz/ca.pem
jwt_authn_metadata: envoy.filters.http.jwt_authn
limits: {max_headers: 200, max_principal_bytes: 2048}  # any field of authz.config.Limits
workers: 1
watch: true
poll_policies: false
log_level: info
```

The environment variable of a key is `AUTHZ_` and the key upper-cased, a nested key joined by
`_` (`AUTHZ_LISTEN`, `AUTHZ_LIMITS_MAX_HEADERS`, `AUTHZ_HEADERS_PRINCIPAL`); lists are
comma-separated, booleans `true`/`false` (or 1/0, yes/no, on/off), and an empty value means
"off" for the optional keys. `AUTHZ_CONFIG` names the config file when `--config` is not given.
Other `AUTHZ_*` variables are ignored, not rejected: Kubernetes sets `AUTHZ_PORT`,
`AUTHZ_SERVICE_HOST`, ... in every pod of a namespace with a Service named `authz`.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import yaml

from authz.config import HeaderNames, Limits, Settings
from authz.errors import ConfigError

ENV_PREFIX = "AUTHZ_"
CONFIG_ENV = "AUTHZ_CONFIG"
LOG_LEVELS = ("debug", "info", "warning", "error")

_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9a-z]+$")  # RFC 9110 token, lower case
_HOST_NAME = re.compile(
    r"^[A-Za-z0-9]([A-Za-z0-9\-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9\-]*[A-Za-z0-9])?)*$"
)


class _Invalid(Exception):
    """A value that is wrong; the caller adds where it came from."""


# -- value kinds: parse (from YAML or from an environment string) and check ---------------------


@dataclass(frozen=True, slots=True)
class _Kind:
    name: str  # for "expected ..." messages
    from_yaml: Callable[[object], object]
    from_env: Callable[[str], object]


def _yaml_str(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise _Invalid(f"expected a non-empty string, got {_describe(value)}")
    return value


def _yaml_optional_str(value: object) -> str | None:
    return None if value is None else _yaml_str(value)


def _env_optional_str(text: str) -> str | None:
    return text or None


def _yaml_str_list(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise _Invalid(f"expected a string or a list of strings, got {_describe(value)}")
    return tuple(_yaml_str(item) for item in value)


def _env_str_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _yaml_bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"expected true or false, got {_describe(value)}")
    return value


def _env_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise _Invalid(f"expected true or false, got {text!r}")


def _yaml_int(value: object) -> int:
    # bool is an int in Python; `workers: true` is a mistake, not 1.
    if not isinstance(value, int) or isinstance(value, bool):
        raise _Invalid(f"expected an integer, got {_describe(value)}")
    return value


def _env_int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise _Invalid(f"expected an integer, got {text!r}") from None


STR = _Kind("string", _yaml_str, lambda text: _yaml_str(text))
OPTIONAL_STR = _Kind("string or null", _yaml_optional_str, _env_optional_str)
STR_LIST = _Kind("list of strings", _yaml_str_list, _env_str_list)
BOOL = _Kind("boolean", _yaml_bool, _env_bool)
INT = _Kind("integer", _yaml_int, _env_int)


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, (dict, list)):
        return f"a {'mapping' if isinstance(value, dict) else 'list'}"
    return f"{type(value).__name__} {value!r}"


# -- checks on the final values ------------------------------------------------------------------


def check_address(address: str, *, allow_unix: bool) -> None:
    """`host:port` (`[v6]:port` for IPv6) with a port in 1-65535, or `unix:/path`."""
    if address.startswith("unix:"):
        if not allow_unix:
            raise _Invalid(f"{address!r}: a unix socket is not supported here; use HOST:PORT")
        if len(address) == len("unix:"):
            raise _Invalid(f"{address!r}: the unix socket needs a path")
        return
    host, sep, port = address.rpartition(":")
    if not sep or not host:
        raise _Invalid(f"{address!r} is not HOST:PORT")
    if not port.isdigit():
        raise _Invalid(f"{address!r}: the port {port!r} is not a number")
    if not 1 <= int(port) <= 65535:
        raise _Invalid(f"{address!r}: the port {port} is out of range (1-65535)")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise _Invalid(f"{address!r}: {host} is not an IPv6 address") from None
        return
    if ":" in host:
        raise _Invalid(f"{address!r}: write an IPv6 address in brackets, e.g. [::1]:{port}")
    if not _HOST_NAME.match(host):
        raise _Invalid(f"{address!r}: {host!r} is not a host name or IP address")


def _check_listen(value: object) -> None:
    assert isinstance(value, tuple)
    if not value:
        raise _Invalid("at least one address is needed")
    for address in value:
        check_address(address, allow_unix=True)


def _check_admin(value: object) -> None:
    if value is not None:
        assert isinstance(value, str)
        check_address(value, allow_unix=False)


def _check_directory(value: object) -> None:
    assert isinstance(value, str)
    if not os.path.isdir(value):
        raise _Invalid(
            f"{value!r} is not a directory"
            if os.path.exists(value)
            else f"{value!r} does not exist"
        )


def _check_file(value: object) -> None:
    if value is None:
        return
    assert isinstance(value, str)
    if not os.path.isfile(value):
        raise _Invalid(
            f"{value!r} is not a file" if os.path.exists(value) else f"{value!r} does not exist"
        )


def _check_log_path(value: object) -> None:
    if value is None or value == "-":
        return
    assert isinstance(value, str)
    if os.path.isdir(value):
        raise _Invalid(f"{value!r} is a directory; name a file, or '-' for stdout")
    parent = os.path.dirname(os.path.abspath(value))
    if not os.path.isdir(parent):
        raise _Invalid(f"{value!r}: the directory {parent!r} does not exist")


def _check_header(value: object) -> None:
    assert isinstance(value, str)
    if not _HEADER_NAME.match(value.lower()):
        raise _Invalid(f"{value!r} is not a valid header name")


def _check_headers(value: object) -> None:
    assert isinstance(value, tuple)
    for name in value:
        _check_header(name)


def _positive(value: object) -> None:
    assert isinstance(value, int)
    if value < 1:
        raise _Invalid(f"must be at least 1, got {value}")


def _check_log_level(value: object) -> None:
    if value not in LOG_LEVELS:
        raise _Invalid(f"expected one of {', '.join(LOG_LEVELS)}, got {value!r}")


@dataclass(frozen=True, slots=True)
class _Key:
    kind: _Kind
    check: Callable[[object], None] | None = None
    paths: bool = False  # the check touches the file system (skipped with check_paths=False)


KEYS: dict[str, _Key] = {
    "listen": _Key(STR_LIST, _check_listen),
    "admin": _Key(OPTIONAL_STR, _check_admin),
    "policies": _Key(STR, _check_directory, paths=True),
    "decision_log": _Key(OPTIONAL_STR, _check_log_path, paths=True),
    "log_headers": _Key(STR_LIST, _check_headers),
    "headers.principal": _Key(STR, _check_header),
    "headers.request_principal": _Key(STR, _check_header),
    "headers.decision_id": _Key(STR, _check_header),
    "trust_xfcc": _Key(BOOL),
    "ca_bundle": _Key(OPTIONAL_STR, _check_file, paths=True),
    "jwt_authn_metadata": _Key(OPTIONAL_STR),
    # One key per `Limits` field: the limits are declared once, in authz.config.
    **{f"limits.{limit.name}": _Key(INT, _positive) for limit in fields(Limits)},
    "workers": _Key(INT, _positive),
    "watch": _Key(BOOL),
    "poll_policies": _Key(BOOL),
    "log_level": _Key(STR, _check_log_level),
}
_SECTIONS = {key.split(".")[0] for key in KEYS if "." in key}


def env_name(key: str) -> str:
    """`limits.max_headers` -> `AUTHZ_LIMITS_MAX_HEADERS`."""
    return ENV_PREFIX + key.replace(".", "_").upper()


# -- reading the sources --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Value:
    value: object
    where: str  # "authz.yaml:7", "AUTHZ_LISTEN", "--listen"


def _did_you_mean(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def read_config_file(path: str, problems: list[str]) -> dict[str, _Value]:
    """The converted values of a config file; problems are appended as `file:line: message`."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as error:
        raise ConfigError(f"config file {path}: {error.strerror or error}") from error
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(f"{path}{line}: not valid YAML: {problem}") from error
    if root is None:
        return {}
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError(f"{path}:{root.start_mark.line + 1}: expected a mapping of settings")
    values: dict[str, _Value] = {}
    _read_mapping(path, root, "", values, problems)
    return values


def _read_mapping(
    path: str, node: yaml.MappingNode, prefix: str, values: dict[str, _Value], problems: list[str]
) -> None:
    known = sorted({k[len(prefix) :].split(".")[0] for k in KEYS if k.startswith(prefix)})
    for key_node, value_node in node.value:
        key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
        line = key_node.start_mark.line + 1
        where = f"{path}:{line}"
        if not isinstance(key, str):
            problems.append(f"{where}: keys must be strings")
            continue
        dotted = prefix + key
        if not prefix and key in _SECTIONS:
            if not isinstance(value_node, yaml.MappingNode):
                problems.append(f"{where}: {key}: expected a mapping")
            else:
                _read_mapping(path, value_node, f"{key}.", values, problems)
            continue
        spec = KEYS.get(dotted)
        if spec is None:
            problems.append(f"{where}: unknown key {dotted!r}{_did_you_mean(key, known)}")
            continue
        raw = _construct(value_node)
        try:
            values[dotted] = _Value(spec.kind.from_yaml(raw), where)
        except _Invalid as problem:
            problems.append(f"{path}:{value_node.start_mark.line + 1}: {dotted}: {problem}")


def _construct(node: yaml.Node) -> Any:
    """The Python value of one composed node (safe types only)."""
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()


def read_environment(environ: Mapping[str, str], problems: list[str]) -> dict[str, _Value]:
    values: dict[str, _Value] = {}
    for key, spec in KEYS.items():
        name = env_name(key)
        if name not in environ:
            continue
        try:
            values[key] = _Value(spec.kind.from_env(environ[name]), name)
        except _Invalid as problem:
            problems.append(f"environment variable {name}: {problem}")
    return values


def read_flags(flags: Mapping[str, tuple[str, object]], problems: list[str]) -> dict[str, _Value]:
    """`flags` maps a key to (flag name, value already parsed by argparse); None values are
    flags that were not given and are skipped."""
    values: dict[str, _Value] = {}
    for key, (flag, value) in flags.items():
        if value is None:
            continue
        if key not in KEYS:
            raise ValueError(f"no setting {key!r}")  # a programming error in the caller
        if isinstance(value, list):
            value = tuple(value)
        values[key] = _Value(value, flag)
    return values


# -- all together ----------------------------------------------------------------------------------


def load_settings(
    config_file: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, tuple[str, object]] | None = None,
    check_paths: bool = True,
) -> Settings:
    """Merge defaults < config file < environment < flags into checked `Settings`.

    `config_file` None: `$AUTHZ_CONFIG` if set, else none. `check_paths`: also check that the
    policy directory, CA bundle and decision log directory exist. Raises ConfigError naming
    every problem and where each value came from.
    """
    environ = {} if environ is None else environ
    if config_file is None:
        config_file = environ.get(CONFIG_ENV) or None
    problems: list[str] = []
    merged: dict[str, _Value] = {}
    if config_file is not None:
        merged.update(read_config_file(config_file, problems))
    merged.update(read_environment(environ, problems))
    merged.update(read_flags(flags or {}, problems))

    for key, found in merged.items():
        spec = KEYS[key]
        if spec.check is None or (spec.paths and not check_paths):
            continue
        try:
            spec.check(found.value)
        except _Invalid as problem:
            problems.append(f"{found.where}: {key}: {problem}")
    if problems:
        head = f"invalid configuration{f' (config file {config_file})' if config_file else ''}:"
        raise ConfigError("\n  ".join([head, *problems]))
    return _settings(merged)


def _settings(merged: Mapping[str, _Value]) -> Settings:
    defaults = Settings()

    def get(key: str, default: Any) -> Any:
        found = merged.get(key)
        return default if found is None else found.value

    listen_all = tuple(get("listen", defaults.listen_all))
    return Settings(
        policies=get("policies", defaults.policies),
        listen=listen_all[0],
        listen_all=listen_all,
        headers=HeaderNames(
            principal=get("headers.principal", defaults.headers.principal).lower(),
            request_principal=get(
                "headers.request_principal", defaults.headers.request_principal
            ).lower(),
            decision_id=get("headers.decision_id", defaults.headers.decision_id).lower(),
        ),
        limits=Limits(
            **{
                limit.name: get(f"limits.{limit.name}", getattr(defaults.limits, limit.name))
                for limit in fields(Limits)
            }
        ),
        ca_bundle=get("ca_bundle", defaults.ca_bundle),
        trust_xfcc=get("trust_xfcc", defaults.trust_xfcc),
        jwt_authn_metadata=get("jwt_authn_metadata", defaults.jwt_authn_metadata),
        admin=get("admin", defaults.admin),
        decision_log=get("decision_log", defaults.decision_log),
        log_headers=tuple(name.lower() for name in get("log_headers", defaults.log_headers)),
        workers=get("workers", defaults.workers),
        watch=get("watch", defaults.watch),
        poll_policies=get("poll_policies", defaults.poll_policies),
        log_level=get("log_level", defaults.log_level),
    )
