"""Settings from a YAML config file, `AUTHZ_*` environment variables and command-line flags.

Which settings exist, their types, defaults and checks are declared once in authz.config; this
module only reads the three sources through that table. Precedence, highest first: flags >
environment > config file > defaults. Every value is checked at start, and every problem is
reported at once in one `ConfigError` that names where the value came from (`authz.yaml:7: ...`,
`AUTHZ_WORKERS: ...`, `--listen: ...`), so a misconfigured pod fails on its first start with a
message that says what to fix.

```yaml
# authz.yaml: every key is optional
listen: ["0.0.0.0:9191", "unix:/run/authz.sock"]   # or one string
grpc: true                     # false: HTTP only (needs http_listen)
http_listen: ["0.0.0.0:9292"]  # the HTTP door; omit: off
http_mode: envoy               # or forward-auth (nginx auth_request, Traefik forwardAuth)
http_path_prefix: ""           # envoy mode: Envoy's http_service path_prefix
http_trust_xfcc: false         # HTTP listeners: workload from Envoy's SANITIZE_SET XFCC
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
log_format: text               # or json
handshake_timeout: 10          # seconds
idle_timeout: 300              # seconds
socket_mode: "0660"            # unix sockets only
socket_group: envoy
```

The environment variable of a key is `AUTHZ_` and the key upper-cased, a nested key joined by
`_` (`AUTHZ_LISTEN`, `AUTHZ_LIMITS_MAX_HEADERS`, `AUTHZ_HEADERS_PRINCIPAL`); lists are
comma-separated, booleans `true`/`false` (or 1/0, yes/no, on/off), and an empty value means
"off" for the optional keys. `AUTHZ_CONFIG` names the config file when `--config` is not given.
Any other `AUTHZ_*` variable is an error (with the close name, as for a misspelt key), except
the service links Kubernetes sets in every pod of a namespace with a Service whose name starts
with `authz` (`AUTHZ_PORT`, `AUTHZ_SERVICE_HOST`, `AUTHZ_ADMIN_PORT_9092_TCP_ADDR`, ...).
"""

from __future__ import annotations

import difflib
import re
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from authz.config import ENV_PREFIX, Entry, Settings, build_settings, sections, settings_table
from authz.config_checks import Invalid
from authz.errors import ConfigError
from authz.limits.stores import PASSWORD_ENV
from authz.page.access import ADMIN_TOKEN_ENV
from authz.policy.language.yaml_source import YamlProblems, YMap, parse_yaml, to_plain
from authz.workers import WORKER_INDEX_ENV  # set by the supervisor of `--workers N`

CONFIG_ENV = "AUTHZ_CONFIG"
# AUTHZ_ variables that are not settings: the config file's name, the worker index, the
# rate-limit store's password and the decision page's token (read where they are used, never a
# flag: flags show in `ps`).
_NOT_SETTINGS = frozenset({CONFIG_ENV, WORKER_INDEX_ENV, PASSWORD_ENV, ADMIN_TOKEN_ENV})
# Kubernetes service links: {NAME}_SERVICE_HOST, {NAME}_SERVICE_PORT[_{port name}], {NAME}_PORT,
# {NAME}_PORT_{port}_{PROTO}[_PROTO|_PORT|_ADDR] for every Service NAME (here authz, authz-x...).
_SERVICE_LINK = re.compile(
    r"^AUTHZ(_[A-Z0-9_]+?)?_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?"
    r"|PORT(_\d+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?)?)$"
)


# -- value kinds: parse from YAML or from an environment string ----------------------------------


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, (dict, list)):
        return f"a {'mapping' if isinstance(value, dict) else 'list'}"
    return f"{type(value).__name__} {value!r}"


def _yaml_str(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise Invalid(f"expected a non-empty string, got {_describe(value)}")
    return value


def _yaml_str_list(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise Invalid(f"expected a string or a list of strings, got {_describe(value)}")
    return tuple(_yaml_str(item) for item in value)


def _yaml_bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"expected true or false, got {_describe(value)}")
    return value


def _yaml_int(value: object) -> int:
    # bool is an int in Python; `workers: true` is a mistake, not 1.
    if not isinstance(value, int) or isinstance(value, bool):
        raise Invalid(f"expected an integer, got {_describe(value)}")
    return value


def _yaml_float(value: object) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise Invalid(f"expected a number, got {_describe(value)}")
    return float(value)


def _env_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise Invalid(f"expected true or false, got {text!r}")


def _env_number(parse: Callable[[str], Any], name: str) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return parse(text.strip())
        except ValueError:
            raise Invalid(f"expected {name}, got {text!r}") from None

    return convert


@dataclass(frozen=True, slots=True)
class _Kind:
    from_yaml: Callable[[object], object]
    from_env: Callable[[str], object]


_KINDS: dict[Any, _Kind] = {
    str: _Kind(_yaml_str, _yaml_str),
    tuple[str, ...]: _Kind(
        _yaml_str_list, lambda text: tuple(p.strip() for p in text.split(",") if p.strip())
    ),
    bool: _Kind(_yaml_bool, _env_bool),
    int: _Kind(_yaml_int, _env_number(int, "an integer")),
    float: _Kind(_yaml_float, _env_number(float, "a number")),
}


def _optional(kind: _Kind) -> _Kind:
    """null in YAML, an empty environment value: the setting is off."""
    return _Kind(
        lambda value: None if value is None else kind.from_yaml(value),
        lambda text: kind.from_env(text) if text else None,
    )


def kind_of(entry: Entry) -> _Kind:
    if isinstance(entry.type, types.UnionType):
        (inner,) = (t for t in entry.type.__args__ if t is not type(None))
        return _optional(_KINDS[inner])
    return _KINDS[entry.type]


def env_name(key: str) -> str:
    """`limits.max_headers` -> `AUTHZ_LIMITS_MAX_HEADERS`."""
    return settings_table()[key].env


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
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or error
        raise ConfigError(f"config file {path}: {reason}") from error
    try:
        root = parse_yaml(path, text)
    except YamlProblems as error:
        raise ConfigError(
            "\n  ".join(
                f"{p.file}:{p.line}: not valid YAML: {p.message.removeprefix('YAML: ')}"
                for p in error.problems
            )
        ) from error
    if root is None:
        return {}
    if not isinstance(root, YMap):
        raise ConfigError(f"{path}:{root.line}: expected a mapping of settings")
    values: dict[str, _Value] = {}
    _read_mapping(path, root, "", values, problems)
    return values


def _read_mapping(
    path: str, node: YMap, prefix: str, values: dict[str, _Value], problems: list[str]
) -> None:
    table = settings_table()
    known = sorted({k[len(prefix) :].split(".")[0] for k in table if k.startswith(prefix)})
    for key, value_node in node.items.items():
        where = f"{path}:{node.key_lines[key]}"
        dotted = prefix + key
        if not prefix and key in sections():
            if not isinstance(value_node, YMap):
                problems.append(f"{where}: {key}: expected a mapping")
            else:
                _read_mapping(path, value_node, f"{key}.", values, problems)
            continue
        entry = table.get(dotted)
        if entry is None:
            problems.append(f"{where}: unknown key {dotted!r}{_did_you_mean(key, known)}")
            continue
        try:
            values[dotted] = _Value(kind_of(entry).from_yaml(to_plain(value_node)), where)
        except Invalid as problem:
            problems.append(f"{path}:{value_node.line}: {dotted}: {problem}")


def read_environment(environ: Mapping[str, str], problems: list[str]) -> dict[str, _Value]:
    by_name = {entry.env: entry for entry in settings_table().values()}
    values: dict[str, _Value] = {}
    for name, text in environ.items():
        if not name.startswith(ENV_PREFIX) or name in _NOT_SETTINGS:
            continue
        entry = by_name.get(name)
        if entry is None:
            if not _SERVICE_LINK.match(name):
                known = sorted([*by_name, CONFIG_ENV])
                problems.append(
                    f"environment variable {name}: unknown setting{_did_you_mean(name, known)}"
                )
            continue
        try:
            values[entry.key] = _Value(kind_of(entry).from_env(text), name)
        except Invalid as problem:
            problems.append(f"environment variable {name}: {problem}")
    return values


def read_flags(flags: Mapping[str, object]) -> dict[str, _Value]:
    """`flags` maps a key to the value argparse parsed; None values are flags that were not
    given and are skipped."""
    table = settings_table()
    values: dict[str, _Value] = {}
    for key, value in flags.items():
        if value is None:
            continue
        if isinstance(value, list):
            value = tuple(value)
        values[key] = _Value(value, table[key].flag)
    return values


# -- all together ----------------------------------------------------------------------------------


def load_settings(
    config_file: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, object] | None = None,
    check_paths: bool = True,
) -> Settings:
    """Merge defaults < config file < environment < flags into checked `Settings`.

    `config_file` None: `$AUTHZ_CONFIG` if set, else none. `flags`: values by key (None: not
    given). `check_paths`: also check that the policy directory, CA bundle and decision log
    directory exist. Raises ConfigError naming every problem and where each value came from.
    """
    environ = {} if environ is None else environ
    if config_file is None:
        config_file = environ.get(CONFIG_ENV) or None
    problems: list[str] = []
    merged: dict[str, _Value] = {}
    if config_file is not None:
        merged.update(read_config_file(config_file, problems))
    merged.update(read_environment(environ, problems))
    merged.update(read_flags(flags or {}))

    table = settings_table()
    for key, found in merged.items():
        entry = table[key]
        check = entry.check
        if check is None or (entry.meta.paths and not check_paths):
            continue
        try:
            check(found.value)
        except Invalid as problem:
            problems.append(f"{found.where}: {key}: {problem}")
    if problems:
        head = f"invalid configuration{f' (config file {config_file})' if config_file else ''}:"
        raise ConfigError("\n  ".join([head, *problems]))
    return build_settings({key: found.value for key, found in merged.items()})
