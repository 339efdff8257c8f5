"""API key files (`*.keys.yaml`): ids, SHA-256 hashes and labels, never keys.

```yaml
keys:
  - {id: acme-1, sha256: 9f86d0...0f00a08, labels: {tenant: acme, tier: gold}}
```

Checked like a policy file, every problem with FILE:LINE: ids are unique in the file and are
tokens (they go upstream in `x-authz-api-key` as `<provider>/<id>`), a hash is 64 hex digits
and names one key only, labels map strings to strings.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from types import MappingProxyType

from authz.errors import Problem
from authz.policy.language.spec import ApiKey
from authz.policy.language.yaml_source import YamlProblems, YMap, YNode, YScalar, YSeq, parse_yaml

KEY_FILE_SUFFIXES = (".keys.yaml", ".keys.yml")

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_HEX = re.compile(r"[0-9a-fA-F]{64}")
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,127}")


def check_key_id(key_id: str) -> None:
    """Raise ValueError unless `key_id` can be a key's id."""
    if not _ID.fullmatch(key_id):
        raise ValueError(f"{key_id!r}: an id is letters, digits and . _ : - (at most 128)")


def check_label_name(name: str) -> None:
    """Raise ValueError unless `name` can be a label name."""
    if not _LABEL.fullmatch(name):
        raise ValueError(f"{name!r}: a label name is letters, digits and . _ / - (at most 128)")


def is_key_file(name: str) -> bool:
    return not name.startswith(".") and name.endswith(KEY_FILE_SUFFIXES)


def parse_key_file(file: str, text: str) -> Mapping[str, ApiKey] | list[Problem]:
    """`{sha256 hex (lower case): ApiKey}` for a valid key file, else every problem found."""
    try:
        root = parse_yaml(file, text)
    except YamlProblems as exc:
        return exc.problems
    problems: list[Problem] = []

    def bad(node: YNode | int, message: str) -> None:
        problems.append(Problem(file, node if isinstance(node, int) else node.line, message))

    if root is None:
        root = YMap(1, {}, {})
    if not isinstance(root, YMap):
        bad(root, "a key file is a mapping with `keys`")
        return problems
    for extra in sorted(set(root.items) - {"keys"}):
        bad(root.key_lines[extra], f"unknown field {extra!r} (a key file has only `keys`)")
    entries = root.items.get("keys", YSeq(root.line, ()))
    if not isinstance(entries, YSeq):
        bad(entries, "`keys` is a list of {id, sha256, labels}")
        return problems
    keys: dict[str, ApiKey] = {}
    ids: dict[str, int] = {}
    for node in entries.items:
        key = _entry(node, bad)
        if key is None:
            continue
        if key.id in ids:
            bad(node, f"the id {key.id!r} is also used on line {ids[key.id]}")
        elif key.sha256 in keys:
            bad(node, f"this sha256 is also the hash of {keys[key.sha256].id!r}")
        else:
            ids[key.id] = node.line
            keys[key.sha256] = key
    return problems or MappingProxyType(keys)


def _entry(node: YNode, bad: Callable[[YNode | int, str], None]) -> ApiKey | None:
    if not isinstance(node, YMap):
        bad(node, "a key is a mapping: {id, sha256, labels}")
        return None
    ok = True
    for extra in sorted(set(node.items) - {"id", "sha256", "labels"}):
        bad(node.key_lines[extra], f"unknown field {extra!r} (a key has id, sha256, labels)")
        ok = False
    id_node, hash_node = node.items.get("id"), node.items.get("sha256")
    key_id = id_node.value if isinstance(id_node, YScalar) else None
    if not isinstance(key_id, str) or not _ID.fullmatch(key_id):
        bad(id_node or node, "`id` is required: letters, digits and . _ : - (at most 128)")
        ok = False
    digest = hash_node.value if isinstance(hash_node, YScalar) else None
    if not isinstance(digest, str) or not _HEX.fullmatch(digest):
        bad(
            hash_node or node,
            "`sha256` is required: the 64 hex digits of the key's SHA-256 (never the key)",
        )
        ok = False
    labels: dict[str, str] = {}
    labels_node = node.items.get("labels")
    if labels_node is not None:
        if not isinstance(labels_node, YMap):
            bad(labels_node, "`labels` maps names to strings")
            ok = False
        else:
            for name, value in labels_node.items.items():
                if not _LABEL.fullmatch(name):
                    bad(labels_node.key_lines[name], f"the label name {name!r} is not a token")
                    ok = False
                elif not isinstance(value, YScalar) or not isinstance(value.value, str):
                    bad(value, f"the label {name!r} needs a string value (quote numbers)")
                    ok = False
                else:
                    labels[name] = value.value
    if not ok:
        return None
    assert isinstance(key_id, str) and isinstance(digest, str)
    return ApiKey(key_id, digest.lower(), MappingProxyType(labels))
