"""All policy file reading: a directory (or one file) -> validated, compiled `PolicySet`.

Which files: every `*.yaml` / `*.yml` under the directory, recursively, except
* names starting with `.`: hidden files, and the `..data` / `..2024_01_01_...` directories of
  a Kubernetes ConfigMap mount (the visible top-level names are symlinks into them, so reading
  them too would load every policy twice);
* `*_test.yaml` / `*_test.yml`: policy *tests* for `authz test`, never policies;
* `*.keys.yaml` / `*.keys.yml`: API key files (`authz.policy.language.keyfile`), read when a
  policy's `api_keys` provider names one (so they reload with the policies, and a bad one rejects
  the set) but never as policies.
Recursion is chosen so that a policy put in a subdirectory is not silently ignored (an
ignored file could hold the deny rule that mattered). Directory symlinks are followed, each
real directory and file is read once, so a symlink loop cannot recurse forever.

Fail closed: an entry with a policy file's name that cannot be read as one (a dangling symlink,
a symlink loop, no permission, a directory, a fifo or device) and a subdirectory that cannot be
listed are problems that reject the whole set, never files quietly left out: the file that could
not be read may be the one with the deny rule. (During a ConfigMap update kubelet may briefly
leave a dangling name; that load is rejected, and the load after the update completes succeeds.)

Local files a policy refers to (`jwks_file`) are read here too: one that is missing or
unreadable is a problem at the line that names it, and their content is part of the revision,
so a reload notices new keys.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

from authz.errors import PolicyError, Problem
from authz.identity.jwks import JwksError, parse_jwks
from authz.policy.decide.compiler import PolicySet, compile_policy_set, set_problems
from authz.policy.language.keyfile import is_key_file, parse_key_file
from authz.policy.language.schema import FileSpec, validate_partly
from authz.policy.language.spec import ApiKey
from authz.policy.language.yaml_source import YamlProblems, flatten, parse_yaml
from authz.policy.load import building

POLICY_SUFFIXES = (".yaml", ".yml")
TEST_SUFFIXES = ("_test.yaml", "_test.yml")
MAX_POLICY_BYTES = 64 * 1024 * 1024  # far above any real set; a bound before reading
MAX_LOCAL_FILE_BYTES = 1024 * 1024  # a JWKS file; the key registry reads it with the same bound

# Reads a local file a policy names: its bytes, or why it cannot be used.
LocalReader = Callable[[str], bytes | str]
# Reads a key file a policy names: its text, or None after adding a problem.
KeyReader = Callable[[str, list[Problem]], str | None]


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

    Raises PolicyError when the directory is missing, holds no policy file, or holds an entry
    named like a policy file that cannot be read as one (see the module docstring). `wanted`
    picks other files the same way (`is_key_file`); then finding none is no problem.
    """
    if not os.path.isdir(directory):
        raise PolicyError([Problem(directory, 0, "policy directory does not exist")])
    found: list[str] = []
    problems: list[Problem] = []
    seen_dirs: set[str] = set()
    seen_files: set[str] = set()
    pending = [""]
    while pending:
        rel_dir = pending.pop()
        path_dir = os.path.join(directory, rel_dir) if rel_dir else directory
        real_dir = os.path.realpath(path_dir)
        if real_dir in seen_dirs:
            continue
        seen_dirs.add(real_dir)
        try:
            with os.scandir(path_dir) as scan:
                names = sorted(entry.name for entry in scan)
        except OSError as exc:
            problems.append(Problem(path_dir, 0, f"cannot list directory: {_why(exc)}"))
            continue
        for name in names:
            if name.startswith("."):
                continue
            rel = f"{rel_dir}/{name}" if rel_dir else name
            path = os.path.join(directory, rel)
            try:
                mode = os.stat(path).st_mode  # follows symlinks: what a read would get
            except OSError as exc:
                if wanted(name):
                    problems.append(Problem(path, 0, _unreadable(path, exc)))
                continue
            if stat.S_ISDIR(mode):
                if wanted(name):
                    problems.append(Problem(path, 0, "a directory, not a policy file"))
                else:
                    pending.append(rel)
                continue
            if not wanted(name):
                continue
            if not stat.S_ISREG(mode):
                problems.append(Problem(path, 0, f"not a regular file ({_kind(mode)})"))
                continue
            real = os.path.realpath(path)
            if real not in seen_files:
                seen_files.add(real)
                found.append(rel)
    if problems:
        raise PolicyError(problems)
    if not found and wanted is is_policy_file:
        raise PolicyError(
            [Problem(directory, 0, "no policy files (*.yaml, *.yml) in the policy directory")]
        )
    return sorted(found)


def load_policy_set(path: str) -> PolicySet:
    """Read, validate and compile every policy file under the directory `path`, or the one
    policy file `path`.

    Raises PolicyError with every problem found; nothing of a bad set is ever used. The build
    pauses the garbage collector and freezes the result (see `authz.policy.load.building`).
    """
    key_paths: list[str] = []
    root = path
    if os.path.isfile(path):
        if os.path.basename(path).endswith(TEST_SUFFIXES):  # named by mistake: say what it is
            raise PolicyError([Problem(path, 0, "a policy test file (`authz test` runs it)")])
        paths, root = [path], os.path.dirname(path)
    else:
        paths = [os.path.join(path, rel) for rel in find_policy_files(path)]
        # Every key file of the directory, named by a provider or not: a bad one rejects the
        # set like any bad file (one named elsewhere is read when a provider names it).
        key_paths = [os.path.join(path, rel) for rel in find_policy_files(path, is_key_file)]
    sources: list[tuple[str, str, str]] = []
    key_files: list[tuple[str, str]] = []
    problems: list[Problem] = []
    for file in paths:
        text = _read_text(file, MAX_POLICY_BYTES, problems)
        if text is not None:
            sources.append((file, text, os.path.dirname(file)))
    for file in key_paths:
        text = _read_key_file(file, problems)
        if text is not None:
            key_files.append((file, text))
    if problems:
        raise PolicyError(problems)
    with building.building():
        return build_policy_set(
            sources,
            key_files,
            read_local=_read_local_file,
            read_keys=_read_key_file,
            directory=root,
        )


def _read_key_file(path: str, problems: list[Problem]) -> str | None:
    """A key file's text (bounded like a local file), or None after saying why not."""
    return _read_text(path, MAX_LOCAL_FILE_BYTES, problems)


def _read_text(path: str, limit: int, problems: list[Problem]) -> str | None:
    try:
        # O_NONBLOCK: a fifo swapped in after find_policy_files looked must not hang the load.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                problems.append(Problem(path, 0, "not a regular file"))
                return None
            data = fh.read(limit + 1)
    except OSError as exc:
        problems.append(Problem(path, 0, _unreadable(path, exc)))
        return None
    if len(data) > limit:
        problems.append(Problem(path, 0, f"larger than {limit} bytes"))
        return None
    text = Problem.decoded(path, data)
    if isinstance(text, Problem):
        problems.append(text)
        return None
    return text


def _read_local_file(path: str) -> bytes | str:
    """The content of a local file a policy names, or why it cannot be used."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                return "not a regular file"
            data = fh.read(MAX_LOCAL_FILE_BYTES + 1)
    except OSError as exc:
        return _unreadable(path, exc)
    if len(data) > MAX_LOCAL_FILE_BYTES:
        return f"larger than {MAX_LOCAL_FILE_BYTES} bytes"
    try:
        parse_jwks(data)
    except JwksError as exc:
        return f"not a usable JWKS: {exc}"
    return data


def build_policy_set(
    sources: Iterable[tuple[str, str, str]],
    key_files: Iterable[tuple[str, str]] = (),
    *,
    read_local: LocalReader | None = None,
    read_keys: KeyReader | None = None,
    directory: str | None = None,
) -> PolicySet:
    """Validate and compile (file name, text, base directory) triples.

    `key_files` are (path, text) of API key files; a key file a provider names that is not
    among them is read with `read_keys` (when given). Key files are part of the revision.

    `read_local(path)` reads a local file a policy names (`jwks_file`): bytes, or a string
    saying why it cannot be used. Without it local files are neither checked nor part of the
    revision (tools that only look at the rules). The revision is a short hash of the names and
    contents (of those files too), so the same files give the same revision on every replica.
    `directory`: the policy directory; the names hashed are relative to it, so `authz validate r/a`,
    `cd r/a && authz validate .` and the absolute path print the revision production logs.
    A local file is hashed by its content only: the policy text that names it is hashed already.
    """
    specs: list[FileSpec] = []
    partial: list[FileSpec] = []  # files with problems: what of them validated
    problems: list[Problem] = []
    digest = hashlib.sha256()
    for file, text, base_dir in sorted(sources, key=lambda source: _name(source[0], directory)):
        digest.update(_name(file, directory).encode() + b"\0" + text.encode() + b"\0")
        try:
            root = parse_yaml(file, text)
        except YamlProblems as exc:
            problems.extend(exc.problems)
            continue
        spec, found = validate_partly(file, root, base_dir)
        # Freed a slice at a time: a big file's tree is a million objects (building.py).
        nodes = flatten(root)
        del root
        building.release(nodes)
        if found:
            problems.extend(found)
            partial.extend([spec] if spec is not None else [])
        elif spec is not None:
            specs.append(spec)
    tables = _key_tables(specs, key_files, read_keys, problems, digest, directory)
    validated = specs
    specs = [_bind_key_files(spec, tables, problems) for spec in specs]
    if read_local is not None:
        # A file with problems too: its missing `jwks_file` is one more problem of this round.
        for spec in [*specs, *partial]:
            for path, line in spec.local_files:
                content = read_local(path)
                if isinstance(content, str):
                    problems.append(Problem(spec.file, line, f"jwks_file {path}: {content}"))
                else:
                    digest.update(b"local\0" + content + b"\0")
    if problems:
        # Every problem at once: the set's too, over what validated of every file.
        # (A partial file's API-key providers may have lost some: not checked across files.)
        partial = [replace(f, api_key_providers=(), api_key_lines=()) for f in partial]
        whole_set, _ = set_problems(sorted(validated + partial, key=lambda f: f.file))
        raise PolicyError(problems + [p for p in whole_set if p not in problems])
    return compile_policy_set(specs, digest.hexdigest()[:12])


def _name(path: str, directory: str | None) -> str:
    """`path` as the revision names it: relative to the policy directory, '/'-separated."""
    if directory is None:
        return path
    relative = os.path.relpath(os.path.abspath(path), os.path.abspath(directory))
    return relative.replace(os.sep, "/")


def _unreadable(path: str, exc: OSError) -> str:
    """Why `path` cannot be read, in the words an operator looks for."""
    if exc.errno == errno.ELOOP:
        return "cannot read: symlink loop"
    if exc.errno == errno.ENOENT and os.path.islink(path):
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        return f"cannot read: dangling symlink to {target}"
    return f"cannot read: {_why(exc)}"


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a fifo"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a file"


def _key_tables(
    specs: Iterable[FileSpec],
    key_files: Iterable[tuple[str, str]],
    read_keys: KeyReader | None,
    problems: list[Problem],
    digest: Any,
    directory: str | None,
) -> dict[str, Mapping[str, ApiKey]]:
    """Every key file the providers name, parsed (problems at FILE:LINE of the key file)."""
    texts = {os.path.normpath(os.path.abspath(path)): text for path, text in key_files}
    if read_keys is not None:
        for spec in specs:
            for provider in spec.api_key_providers:
                if provider.keys_file not in texts and os.path.exists(provider.keys_file):
                    text = read_keys(provider.keys_file, problems)
                    if text is not None:
                        texts[provider.keys_file] = text
    tables: dict[str, Mapping[str, ApiKey]] = {}
    for path, text in sorted(texts.items(), key=lambda item: _name(item[0], directory)):
        digest.update(b"keys\0" + _name(path, directory).encode() + b"\0" + text.encode() + b"\0")
        table = parse_key_file(path, text)
        if isinstance(table, list):
            problems.extend(table)
        else:
            tables[path] = table
    return tables


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
            if not any(p.file == provider.keys_file for p in problems):
                problems.append(
                    Problem(
                        spec.file,
                        line,
                        f"keys_file {os.path.basename(provider.keys_file)!r} of API-key "
                        f"provider {provider.name!r} is not a key file in the policy directory",
                    )
                )
            continue
        bound.append(replace(provider, keys=table))
    return replace(spec, api_key_providers=tuple(bound))
