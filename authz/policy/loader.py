"""All policy file reading: a directory -> validated, compiled `PolicySet`.

Which files: every `*.yaml` / `*.yml` under the directory, recursively, except
* names starting with `.`: hidden files, and the `..data` / `..2024_01_01_...` directories of
  a Kubernetes ConfigMap mount (the visible top-level names are symlinks into them, so reading
  them too would load every policy twice);
* `*_test.yaml` / `*_test.yml`: policy *tests* for `authz test`, never policies;
* `*.keys.yaml` / `*.keys.yml`: API key files (`authz.policy.keyfile`), read with the policies
  (so they reload with them, and a bad one rejects the set) but only as key files.
Recursion is chosen so that a policy put in a subdirectory is not silently ignored (an
ignored file could hold the deny rule that mattered). Directory symlinks are followed, each
real directory and file is read once, so a symlink loop cannot recurse forever.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace

from authz.errors import PolicyError, Problem
from authz.policy.compiler import PolicySet, compile_policy_set
from authz.policy.keyfile import is_key_file, parse_key_file
from authz.policy.schema import FileSpec, parse_file
from authz.policy.spec import ApiKey

POLICY_SUFFIXES = (".yaml", ".yml")
TEST_SUFFIXES = ("_test.yaml", "_test.yml")


def is_policy_file(name: str) -> bool:
    """True for a file name the loader reads as a policy."""
    return (
        not name.startswith(".")
        and name.endswith(POLICY_SUFFIXES)
        and not name.endswith(TEST_SUFFIXES)
        and not is_key_file(name)
    )


def find_policy_files(directory: str, wanted: Callable[[str], bool] = is_policy_file) -> list[str]:
    """Policy file paths under `directory` (relative to it, '/'-separated), sorted.

    Raises PolicyError when the directory is missing or holds no policy file. `wanted` picks
    other files the same way (`is_key_file`); then finding none is no error.
    """
    if not os.path.isdir(directory):
        raise PolicyError([Problem(directory, 0, "policy directory does not exist")])
    found: list[str] = []
    seen_dirs: set[str] = set()
    seen_files: set[str] = set()
    for root, dirs, files in os.walk(directory, followlinks=True):
        real_root = os.path.realpath(root)
        if real_root in seen_dirs:
            dirs[:] = []
            continue
        seen_dirs.add(real_root)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not wanted(name):
                continue
            path = os.path.join(root, name)
            real = os.path.realpath(path)
            if real in seen_files or not os.path.isfile(path):
                continue
            seen_files.add(real)
            found.append(os.path.relpath(path, directory).replace(os.sep, "/"))
    if not found and wanted is is_policy_file:
        raise PolicyError(
            [Problem(directory, 0, "no policy files (*.yaml, *.yml) in the policy directory")]
        )
    return sorted(found)


def load_policy_set(directory: str) -> PolicySet:
    """Read, validate and compile every policy file under `directory`.

    Raises PolicyError with every problem found; nothing of a bad set is ever used.
    """
    sources: list[tuple[str, str, str]] = []
    key_files: list[tuple[str, str]] = []
    problems: list[Problem] = []
    for wanted in (is_policy_file, is_key_file):
        for rel in find_policy_files(directory, wanted):
            path = os.path.join(directory, rel)
            try:
                with open(path, "rb") as fh:
                    data = fh.read()
                text = data.decode("utf-8")
            except OSError as exc:
                problems.append(Problem(path, 0, f"cannot read: {exc.strerror or exc}"))
                continue
            except UnicodeDecodeError:
                problems.append(Problem(path, 0, "not UTF-8 text"))
                continue
            if wanted is is_key_file:
                key_files.append((path, text))
            else:
                sources.append((path, text, os.path.dirname(path)))
    if problems:
        raise PolicyError(problems)
    return build_policy_set(sources, key_files)


def build_policy_set(
    sources: Iterable[tuple[str, str, str]], key_files: Iterable[tuple[str, str]] = ()
) -> PolicySet:
    """Validate and compile (file name, text, base directory) triples and the (file name,
    text) of key files; no file reading.

    The revision is a short hash of the names and contents (key files included), so the same
    files give the same revision on every replica.
    """
    specs: list[FileSpec] = []
    problems: list[Problem] = []
    digest = hashlib.sha256()
    for file, text, base_dir in sorted(sources):
        digest.update(file.encode() + b"\0" + text.encode() + b"\0")
        result = parse_file(file, text, base_dir)
        if isinstance(result, FileSpec):
            specs.append(result)
        else:
            problems.extend(result)
    tables: dict[str, Mapping[str, ApiKey]] = {}
    for file, text in sorted(key_files):
        digest.update(b"keys\0" + file.encode() + b"\0" + text.encode() + b"\0")
        table = parse_key_file(file, text)
        if isinstance(table, list):
            problems.extend(table)
        else:
            tables[os.path.normpath(os.path.abspath(file))] = table
    specs = [_bind_key_files(spec, tables, problems) for spec in specs]
    if problems:
        raise PolicyError(problems)
    return compile_policy_set(specs, digest.hexdigest()[:12])


def _bind_key_files(
    spec: FileSpec, tables: Mapping[str, Mapping[str, ApiKey]], problems: list[Problem]
) -> FileSpec:
    """The file with each API-key provider given the keys of its `keys_file`."""
    if not spec.api_key_providers:
        return spec
    bound = []
    for provider, line in zip(spec.api_key_providers, spec.api_key_lines, strict=True):
        table = tables.get(provider.keys_file)
        if table is None:
            problems.append(
                Problem(
                    spec.file,
                    line,
                    f"keys_file {os.path.basename(provider.keys_file)!r} of API-key provider "
                    f"{provider.name!r} is not a key file in the policy directory",
                )
            )
            continue
        bound.append(replace(provider, keys=table))
    return replace(spec, api_key_providers=tuple(bound))
