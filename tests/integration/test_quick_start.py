"""README.md's quick start, run as written: `./dev serve` on ./policies, then the `./dev authz
check` and `./dev authz explain` lines reach an allow, the denies and why (issue 25).

The service runs on a free port instead of 9191 (other tests run beside this one), so each check
line gets `--authz ADDR`; everything else is the README's text, including the expected answer in
each line's comment.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

from tests.support.service import REPO_ROOT, ServiceProcess

README = REPO_ROOT / "README.md"


def quick_start_lines() -> list[tuple[list[str], str]]:
    """(argv after `./dev authz`, the expected answer in the comment) for each `./dev authz`
    line of the quick start's shell blocks."""
    section = README.read_text(encoding="utf-8").split("\n## Quick start\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", section, re.S):
        for line in block.splitlines():
            command, _, comment = line.partition("  #")
            if command.startswith("./dev authz "):
                lines.append((shlex.split(command)[2:], comment.strip()))
    return lines


def authz(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authz", *argv],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_quick_start_reaches_an_allow_a_deny_and_why(tmp_path: Path) -> None:
    lines = quick_start_lines()
    checks = [(argv, expect) for argv, expect in lines if argv[0] == "check"]
    explains = [(argv, expect) for argv, expect in lines if argv[0] == "explain"]
    assert len(checks) >= 2 and explains
    assert {expect.split()[0] for _, expect in checks} == {"ALLOW", "DENY"}
    with ServiceProcess(REPO_ROOT / "policies") as service:
        for argv, expect in checks:
            result = authz([*argv, "--authz", service.address])
            first = result.stdout.splitlines()[0] if result.stdout else result.stderr
            assert first.startswith(expect.split(" (")[0]), (argv, result.stdout, result.stderr)
            assert result.returncode == (0 if expect.startswith("ALLOW") else 3)
            assert "why, rule by rule: authz explain policies" in result.stdout
    for argv, _why in explains:
        result = authz(argv)
        assert result.returncode == 0, result.stderr
        # The rule that denied the check above, marked as the one that decided.
        assert result.stdout.startswith("DENY 403 reason=no-debug-endpoints"), result.stdout
        assert re.search(r"=> no-debug-endpoints\s+deny", result.stdout), result.stdout


def test_check_without_a_service_says_so_in_one_line() -> None:
    result = authz(["check", "--path", "/", "--authz", "127.0.0.1:1", "--timeout", "2"])
    assert result.returncode == 1
    assert result.stderr.startswith("authz check: no answer from 127.0.0.1:1")
    assert "is `authz serve` running?" in result.stderr and "Traceback" not in result.stderr


MINT = REPO_ROOT / "examples" / "demo-issuer" / "mint.py"
TENANTS = REPO_ROOT / "examples" / "multi-tenant"


def mint(*claims: str) -> str:
    argv = [sys.executable, str(MINT), *(a for c in claims for a in ("--claim", c))]
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip()


def test_the_multi_tenant_example_serves_tokens_the_demo_issuer_mints() -> None:
    """mint.py mints the tenant_id and roles claims examples/multi-tenant reads, and the
    example's key file is inside its own directory (issue 25.11)."""
    text = (TENANTS / "tenants.yaml").read_text(encoding="utf-8")
    (jwks_file,) = re.findall(r"jwks_file: (\S+)", text)
    assert (TENANTS / jwks_file).resolve().parent == TENANTS
    assert (TENANTS / jwks_file).read_bytes() == (
        REPO_ROOT / "policies/demo-jwks.json"
    ).read_bytes()
    member = mint("tenant_id=acme")
    admin = mint("tenant_id=acme", 'roles=["tenant-admin"]')
    host = ("--host", "app.tenants.example.com")
    with ServiceProcess(TENANTS) as service:

        def check(path: str, token: str, method: str = "GET") -> str:
            argv = ["check", "--authz", service.address, *host, "--path", path]
            result = authz([*argv, "--token", token, "--method", method])
            return result.stdout.splitlines()[0]

        assert check("/tenants/acme/orders", member).startswith("ALLOW 200 reason=members-use")
        assert check("/tenants/globex/orders", member).startswith("DENY 403")
        assert check("/admin/tenants/acme", member, "DELETE").startswith("DENY 403")
        assert check("/admin/tenants/acme", admin, "DELETE").startswith("ALLOW 200 reason=admins")
