"""Independent check of a calgate .ics feed with the python `icalendar` package.

usage: validate_feed.py FEED.ics EXPECTED.json

EXPECTED.json: {"calendar": {prop: value}, "events": [{"uid", "summary", "location",
"description", "status", "start_utc", "end_utc"} | {"uid", "all_day": true, "start",
"end"}]} — every event of the feed must be listed, in any order.
Checks: RFC 5545 line length and CRLF endings; required calendar properties;
a VTIMEZONE for every TZID used, whose own rules (not the system's) give the same
UTC instants; text values round-trip exactly (escaping and folding).
Prints "ok: N events" and exits 0, or prints every problem and exits 1.
"""
import datetime as dt
import json
import sys

import icalendar


def main(feed_path, expected_path):
    raw = open(feed_path, "rb").read()
    expected = json.load(open(expected_path))
    problems = []

    if not raw.endswith(b"\r\n"):
        problems.append("feed does not end with CRLF")
    for n, line in enumerate(raw.split(b"\r\n")[:-1], 1):
        if len(line) > 75:
            problems.append(f"line {n} is {len(line)} octets (> 75)")
        if b"\n" in line or b"\r" in line:
            problems.append(f"line {n} contains a bare CR or LF")
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            # Folding inside a multi-octet character breaks each physical line.
            problems.append(f"line {n} is not valid UTF-8 on its own")

    cal = icalendar.Calendar.from_ical(raw)
    for prop in ["PRODID", "VERSION", "CALSCALE", "X-WR-CALNAME", "X-WR-TIMEZONE",
                 "REFRESH-INTERVAL", "X-PUBLISHED-TTL"]:
        if prop not in cal:
            problems.append(f"calendar lacks {prop}")
    for prop, value in expected.get("calendar", {}).items():
        got = str(cal.get(prop))
        if got != value:
            problems.append(f"calendar {prop}: {got!r} != {value!r}")

    zones = {}
    for vtz in cal.walk("VTIMEZONE"):
        zones[str(vtz["TZID"])] = vtz.to_tz(lookup_tzid=False)

    events = {str(e["UID"]): e for e in cal.walk("VEVENT")}
    want = {e["uid"]: e for e in expected["events"]}
    if set(events) != set(want):
        problems.append(f"event UIDs differ: feed {sorted(events)} expected {sorted(want)}")

    def utc(event, prop):
        p = event[prop]
        value = p.dt
        tzid = p.params.get("TZID")
        if tzid is not None:
            if tzid not in zones:
                problems.append(f"{event['UID']}: {prop} uses TZID {tzid} without VTIMEZONE")
                return None
            # Interpret with the feed's own VTIMEZONE rules.
            value = value.replace(tzinfo=None)
            value = zones[tzid].localize(value) if hasattr(zones[tzid], "localize") \
                else value.replace(tzinfo=zones[tzid])
        return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

    for uid, w in want.items():
        e = events.get(uid)
        if e is None:
            continue
        for prop in ["DTSTAMP", "SEQUENCE", "DTSTART", "DTEND", "STATUS"]:
            if prop not in e:
                problems.append(f"{uid}: missing {prop}")
        if w.get("skip_times"):
            pass
        elif w.get("all_day"):
            for prop, key in [("DTSTART", "start"), ("DTEND", "end")]:
                got = e[prop].dt
                if isinstance(got, dt.datetime) or got.isoformat() != w[key]:
                    problems.append(f"{uid}: {prop} {got!r} != date {w[key]}")
        else:
            for prop, key in [("DTSTART", "start_utc"), ("DTEND", "end_utc")]:
                got = utc(e, prop)
                if got != w[key]:
                    problems.append(f"{uid}: {prop} is {got} UTC, expected {w[key]}")
        for prop in ["summary", "location", "description", "status"]:
            if prop not in w:
                continue
            got = e.get(prop.upper())
            got = None if got is None else str(got)
            if got != w[prop]:
                problems.append(f"{uid}: {prop.upper()} {got!r} != {w[prop]!r}")
        for prop in w.get("absent", []):
            if prop in e:
                problems.append(f"{uid}: {prop} must not be present, found {e[prop]!r}")

    if problems:
        print("\n".join(problems))
        return 1
    print(f"ok: {len(events)} events")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
