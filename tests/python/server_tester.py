"""Runs the third-party caldav-server-tester against a calgate URL and grades it.

usage: server_tester.py URL USER PASSWORD EXPECTED.json [REPORT.json [USER2:PASSWORD2]]

USER2 is a second account on the same server: the tester needs one to probe
multi-user scheduling (RFC 6638 inbox delivery, free/busy of another user). It
is handed over the way the tester reads extra accounts: a caldav configuration
file (CALDAV_CONFIG_FILE) with one section, named with --config-section.

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
import os
import sys
import tempfile

from caldav.compatibility_hints import FeatureSet
from caldav_server_tester import check_server_compatibility


def main():
    url, user, password, expected_path = sys.argv[1:5]
    report_path = sys.argv[5] if len(sys.argv) > 5 and sys.argv[5] else None
    extra_user = sys.argv[6] if len(sys.argv) > 6 else None
    out = io.StringIO()
    args = [
        "caldav-server-tester",
        "--caldav-url", url,
        "--caldav-username", user,
        "--caldav-password", password,
        "--format", "hints",
    ]
    config_path = None
    if extra_user:
        name, secret = extra_user.split(":", 1)
        config = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
        json.dump(
            {"extra1": {"caldav_url": url, "caldav_username": name, "caldav_password": secret}},
            config,
        )
        config.close()
        config_path = config.name
        os.environ["CALDAV_CONFIG_FILE"] = config_path
        args += ["--config-section", "extra1"]
    sys.argv = args
    with contextlib.redirect_stdout(out):
        try:
            check_server_compatibility()
        except SystemExit as e:
            if e.code not in (0, None):
                print(f"tester exited with {e.code}", file=sys.stderr)
        finally:
            if config_path:
                os.unlink(config_path)
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
