"""All policy file reading: a directory -> validated, compiled `PolicySet`.

Which files: every `*.yaml` / `*.yml` under the directory, recursively, except
* names starting with `.`: hidden files, and the `..data` / `..2024_01_01_...` directories of
  a Kubernetes ConfigMap mount (the visible top-level names are symlinks into them, so reading
  them too would load every policy twice);
* `*_test.yaml` / `*_test.yml`: policy *tests* for `authz test`, never policies.
Recursion is chosen so that a policy put in a subdirectory is not silently ignored (an
ignored file could hold the deny rule that mattered). Directory symlinks are followed, each
real directory and file is read once, so a symlink loop cannot recurse forever.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable

from authz.errors import PolicyError, Problem
from authz.policy.compiler import PolicySet, compile_policy_set
from authz.policy.schema import FileSpec, parse_file

POLICY_SUFFIXES = (".yaml", ".yml")
TEST_SUFFIXES = ("_test.yaml", "_test.yml")


def is_policy_file(name: str) -> bool:
    """True for a file name the loader reads as a policy."""
    return (
        not name.startswith(".")
        and name.endswith(POLICY_SUFFIXES)
        and not name.endswith(TEST_SUFFIXES)
    )


def find_policy_files(directory: str) -> list[str]:
    """Policy file paths under `directory` (relative to it, '/'-separated), sorted.

    Raises PolicyError when the directory is missing or holds no policy file.
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
            if not is_policy_file(name):
                continue
            path = os.path.join(root, name)
            real = os.path.realpath(path)
            if real in seen_files or not os.path.isfile(path):
                continue
            seen_files.add(real)
            found.append(os.path.relpath(path, directory).replace(os.sep, "/"))
    if not found:
        raise PolicyError(
            [Problem(directory, 0, "no policy files (*.yaml, *.yml) in the policy directory")]
        )
    return sorted(found)


def load_policy_set(directory: str) -> PolicySet:
    """Read, validate and compile every policy file under `directory`.

    Raises PolicyError with every problem found; nothing of a bad set is ever used.
    """
    sources: list[tuple[str, str, str]] = []
    problems: list[Problem] = []
    for rel in find_policy_files(directory):
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
        sources.append((path, text, os.path.dirname(path)))
    if problems:
        raise PolicyError(problems)
    return build_policy_set(sources)


def build_policy_set(sources: Iterable[tuple[str, str, str]]) -> PolicySet:
    """Validate and compile (file name, text, base directory) triples; no file reading.

    The revision is a short hash of the names and contents, so the same files give the
    same revision on every replica.
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
    if problems:
        raise PolicyError(problems)
    return compile_policy_set(specs, digest.hexdigest()[:12])
