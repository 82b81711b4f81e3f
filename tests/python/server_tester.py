"""Runs the third-party caldav-server-tester against a calgate URL and grades it.

usage: server_tester.py URL USER PASSWORD EXPECTED.json [REPORT.json]

Grading follows ../shared/tools/peercheck (the team's peer baselines): a feature
PASSes when its support level is "full" or the caldav library's default for it,
is SKIPped when the tester could not probe it ("unknown"), and FAILs otherwise.
EXPECTED.json maps feature -> the verdict we hold ourselves to. Any feature
expected to PASS that does not is a regression: exit 1. Improvements are printed
so the expectation file can be tightened.
"""
import ast
import contextlib
import io
import json
import sys

from caldav.compatibility_hints import FeatureSet
from caldav_server_tester import check_server_compatibility


def main():
    url, user, password, expected_path = sys.argv[1:5]
    report_path = sys.argv[5] if len(sys.argv) > 5 else None
    out = io.StringIO()
    sys.argv = [
        "caldav-server-tester",
        "--caldav-url", url,
        "--caldav-username", user,
        "--caldav-password", password,
        "--format", "hints",
    ]
    with contextlib.redirect_stdout(out):
        try:
            check_server_compatibility()
        except SystemExit as e:
            if e.code not in (0, None):
                print(f"tester exited with {e.code}", file=sys.stderr)
    raw = out.getvalue().strip()
    if not raw.startswith("{"):
        print(f"no report from the tester:\n{raw[:2000]}")
        return 1
    observed = ast.literal_eval(raw)
    defaults = FeatureSet()
    verdicts = {}
    for feature, info in sorted(observed.items()):
        if "support" not in info:
            continue
        support = info["support"]
        default = defaults.is_supported(feature, str)
        verdicts[feature] = (
            "SKIP" if support == "unknown" else "PASS" if support in ("full", default) else "FAIL"
        )
    if report_path:
        with open(report_path, "w") as f:
            json.dump(verdicts, f, indent=1, sort_keys=True)
    expected = json.load(open(expected_path))
    regressions = [
        f"{feature}: expected PASS, got {verdicts.get(feature, 'nothing')}"
        for feature, verdict in sorted(expected.items())
        if verdict == "PASS" and verdicts.get(feature) != "PASS"
    ]
    better = [
        f"{feature}: {expected.get(feature, 'new')} -> PASS"
        for feature, verdict in sorted(verdicts.items())
        if verdict == "PASS" and expected.get(feature) != "PASS"
    ]
    count = lambda v: sum(x == v for x in verdicts.values())
    print(f"{count('PASS')} passed, {count('FAIL')} failed, {count('SKIP')} skipped")
    for line in better:
        print(f"improved: {line}")
    for line in regressions:
        print(f"REGRESSION: {line}")
    return 1 if regressions else 0


if __name__ == "__main__":
    sys.exit(main())
