"""`authz apikey new`: make an API key, print it once, and the line for the key file.

The key itself is never written anywhere: only its SHA-256 goes in the key file, so losing the
file leaks no key, and a key that is lost is replaced, not recovered.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys

from authz.identity.apikeys import key_hash
from authz.policy.language.keyfile import check_key_id, check_label_name

NAME = "apikey"
HELP = "make a new API key: print it once and the line to add to the provider's key file"

# 32 random bytes (256 bits), URL-safe base64: fits a header, a query parameter and a cookie,
# and never holds the "," that Envoy uses to join a header sent twice.
KEY_BYTES = 32


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    new = actions.add_parser("new", help=HELP, description=HELP)
    new.add_argument("--provider", required=True, help="the api_keys provider's name")
    new.add_argument("--id", required=True, dest="key_id", help="the key's id, unique in its file")
    new.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a label of the key (repeatable), for `when: [{api_key_label: NAME, ...}]`",
    )


def run(args: argparse.Namespace) -> int:
    labels: dict[str, str] = {}
    try:
        check_key_id(args.key_id)
        for item in args.label:
            name, eq, value = item.partition("=")
            if not eq:
                raise ValueError(f"--label {item!r}: write NAME=VALUE")
            check_label_name(name)
            labels[name] = value
    except ValueError as error:
        print(f"authz apikey: {error}", file=sys.stderr)
        return 2
    key = secrets.token_urlsafe(KEY_BYTES)
    entry: dict[str, object] = {"id": args.key_id, "sha256": key_hash(key)}
    if labels:
        entry["labels"] = labels
    # JSON is YAML: one flow-style line that quotes whatever the values hold.
    line = json.dumps(entry, ensure_ascii=False)
    print(f"API key for {args.provider}/{args.key_id} (shown once, stored nowhere):")
    print(f"  {key}")
    print(f"Add this line under `keys:` in the key file of provider {args.provider!r}:")
    print(f"  - {line}")
    return 0
