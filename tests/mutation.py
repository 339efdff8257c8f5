"""Mutation testing of the modules that decide: `./dev mutate` (mutmut, configured in
pyproject.toml's [tool.mutmut]: which modules, which tests).

mutmut plants one small bug at a time (a flipped comparison, a changed constant, a dropped
call) in a copy of the package under `mutants/` and runs the tests that reach the changed
function; a mutant the tests do not notice "survived". This prints the kill rate per module and
every survivor that `tests/mutation_equivalent.txt` does not explain as equivalent (a change no
test can observe, such as the wording of an error message nobody matches on).

    ./dev mutate                    # the whole configured set (a few minutes per module)
    ./dev mutate --show             # also print the diff of each unexplained survivor
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EQUIVALENT = Path(__file__).with_name("mutation_equivalent.txt")


def mutmut(*args: str, capture: bool = False) -> str:
    command = [sys.executable, "-m", "mutmut", *args]
    done = subprocess.run(command, cwd=ROOT, text=True, capture_output=capture, check=False)
    if done.returncode != 0:
        sys.exit(f"mutmut {' '.join(args)} failed with {done.returncode}")
    return done.stdout if capture else ""


def equivalent() -> dict[str, str]:
    """Mutant name -> why it is equivalent, from tests/mutation_equivalent.txt."""
    reasons: dict[str, str] = {}
    for line in EQUIVALENT.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, why = line.partition(" ")
            reasons[name] = why.strip()
    return reasons


def results() -> dict[str, str]:
    """Every mutant's name -> its status (killed, survived, timeout, ...)."""
    statuses: dict[str, str] = {}
    for line in mutmut("results", "--all", "true", capture=True).splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep:
            statuses[name] = status
    return statuses


def module_of(mutant: str) -> str:
    """`authz.policy.language.patterns.x_check__mutmut_4` -> `authz.policy.language.patterns`."""
    return mutant.rsplit(".", 1)[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--show", action="store_true", help="print each unexplained survivor")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    mutmut("run", "--max-children", str(args.jobs))
    statuses = results()
    explained = equivalent()
    per_module: dict[str, Counter[str]] = defaultdict(Counter)
    unexplained: list[str] = []
    for name, status in statuses.items():
        if status == "survived" and name in explained:
            status = "equivalent"
        per_module[module_of(name)][status] += 1
        if status == "survived":
            unexplained.append(name)

    print(f"\n{'module':40} {'mutants':>8} {'killed':>7} {'equiv.':>7} {'survived':>9} {'rate':>7}")
    totals: Counter[str] = Counter()
    for module in sorted(per_module):
        counts = per_module[module]
        totals.update(counts)
        print(_row(module, counts))
    print(_row("all", totals))
    for name in unexplained:
        print(f"survived: {name}")
        if args.show:
            print(mutmut("show", name, capture=True))
    return 0


def _row(module: str, counts: Counter[str]) -> str:
    total = sum(counts.values())
    # A timeout is a kill: the planted bug made the tests hang, and the run noticed.
    killed = counts["killed"] + counts["timeout"]
    judged = total - counts["equivalent"]
    rate = f"{100 * killed / judged:.1f}%" if judged else "-"
    return (
        f"{module:40} {total:8} {killed:7} {counts['equivalent']:7} "
        f"{counts['survived']:9} {rate:>7}"
    )


if __name__ == "__main__":
    sys.exit(main())
