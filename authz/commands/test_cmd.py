"""`authz test DIR`: run the policy tests (`*_test.yaml`) against the policy set in DIR."""

from __future__ import annotations

import argparse
import sys

from authz.commands._flags import add_policy_directory

NAME = "test"
HELP = "run the request/expectation cases of every *_test.yaml under a policy directory"


def percentage(text: str) -> float:
    """A percentage, 0-100 (argparse turns the ValueError into a usage error naming the flag)."""
    value = float(text)
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{text} is not a percentage (0-100)")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    add_policy_directory(parser)
    parser.add_argument(
        "--tests",
        action="append",
        metavar="PATH",
        help=(
            "a test file or directory to run instead of the *_test.yaml files under DIR; may be "
            "repeated"
        ),
    )
    parser.add_argument(
        "--verbose", "-v", action="store_true", help="also list the cases that passed"
    )
    parser.add_argument(
        "--coverage",
        action="store_true",
        help="report which rules, role entries and conditions the cases exercise",
    )
    parser.add_argument(
        "--json", action="store_true", help="the coverage report as JSON (implies --coverage)"
    )
    parser.add_argument(
        "--min-coverage",
        type=percentage,
        metavar="P",
        help="with --coverage: exit 1 when under P percent of the items are covered",
    )


def run(args: argparse.Namespace) -> int:
    import os

    from authz.authoring.cases import TEST_SUFFIXES, find_test_files, load_cases, run_cases
    from authz.commands._problems import report_invalid
    from authz.errors import PolicyError
    from authz.policy import load_policy_set

    directory, tests = args.directory, args.tests
    if not tests and os.path.isfile(directory):
        if not directory.endswith(TEST_SUFFIXES):
            print(f"{directory}: a policy file, not tests: add --tests PATH", file=sys.stderr)
            return 1
        # `authz test policies/shop_test.yaml`: that file, against the set it sits in.
        tests, directory = [directory], os.path.dirname(directory) or "."
    paths: list[str] = []
    for given in tests or [directory]:
        paths.extend(find_test_files(given) if os.path.isdir(given) else [given])
    if not paths:
        print(f"{directory}: no *_test.yaml files", file=sys.stderr)
        return 1
    try:
        policy_set = load_policy_set(directory)
    except PolicyError as error:
        return report_invalid(error, f"{directory}: the policy set is invalid; no test was run")
    try:
        cases = load_cases(paths)
    except PolicyError as error:
        return report_invalid(error, "the test files are invalid; no test was run")
    results = run_cases(policy_set, cases)
    failed = 0
    # With --json, stdout is the JSON document alone; the case results go to stderr.
    out = sys.stderr if args.json else sys.stdout
    for result in results:
        case = result.case
        if result.passed:
            if args.verbose:
                print(f"PASS {case.file}:{case.line}: {case.name}", file=out)
            continue
        failed += 1
        for failure in result.failures:
            print(f"FAIL {case.file}:{case.line}: {case.name}: {failure}", file=out)
    passed = len(results) - failed
    print(f"{passed} passed, {failed} failed (policy revision {policy_set.revision})", file=out)
    code = 1 if failed else 0
    if args.coverage or args.json or args.min_coverage is not None:
        import json

        from authz.authoring.coverage import measure, report_text

        coverage = measure(policy_set, cases)
        if args.json:
            print(json.dumps(coverage.to_json(), indent=2))
        else:
            print(report_text(coverage))
        if args.min_coverage is not None and coverage.percent < args.min_coverage:
            print(
                f"coverage {coverage.percent:.1f}% is under --min-coverage {args.min_coverage:g}%",
                file=sys.stderr,
            )
            code = 1
    return code
