"""The python `caldav` client against calgate, as an application would use it.

usage: caldav_scenario.py BASE_URL USER PASSWORD
Discovers from the server root, lists calendars, creates a calendar, saves a
recurring event with a TZID, searches with expansion, fetches, edits, syncs by
token, asks free/busy and deletes. Prints each step; exits 1 on the first failure.
"""
import datetime as dt
import sys

import caldav

WEEKLY = """BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//calgate tests//python caldav//EN
BEGIN:VTIMEZONE
TZID:Europe/Paris
BEGIN:STANDARD
DTSTART:19701025T030000
RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU
TZOFFSETFROM:+0200
TZOFFSETTO:+0100
END:STANDARD
BEGIN:DAYLIGHT
DTSTART:19700329T020000
RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU
TZOFFSETFROM:+0100
TZOFFSETTO:+0200
END:DAYLIGHT
END:VTIMEZONE
BEGIN:VEVENT
UID:py-weekly-1
DTSTAMP:20261101T000000Z
DTSTART;TZID=Europe/Paris:20270301T090000
DTEND;TZID=Europe/Paris:20270301T100000
RRULE:FREQ=WEEKLY;COUNT=6
SUMMARY:Weekly sync
END:VEVENT
END:VCALENDAR
"""

ONE_OFF = """BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//calgate tests//python caldav//EN
BEGIN:VEVENT
UID:py-once-1
DTSTAMP:20261101T000000Z
DTSTART:20270305T140000Z
DTEND:20270305T150000Z
SUMMARY:Dentist
END:VEVENT
END:VCALENDAR
"""


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        sys.exit(1)


def main(url, user, password):
    client = caldav.DAVClient(url=url, username=user, password=password)
    principal = client.principal()
    check(principal is not None, "principal discovered from the server root")
    names = [c.get_display_name() for c in principal.calendars()]
    check(any("bookings" in (n or "") for n in names), f"calendars listed: {names}")

    cal = principal.make_calendar(name="Staff (python)", cal_id="py-staff")
    check(cal.get_display_name() == "Staff (python)", "calendar created with MKCALENDAR")

    weekly = cal.save_event(WEEKLY)
    check(weekly is not None, "recurring event with TZID saved")
    cal.save_event(ONE_OFF)

    start = dt.datetime(2027, 3, 1, tzinfo=dt.timezone.utc)
    end = dt.datetime(2027, 3, 22, tzinfo=dt.timezone.utc)
    found = cal.search(start=start, end=end, event=True, expand=True)
    starts = sorted(e.icalendar_component["DTSTART"].dt for e in found)
    check(len(found) == 4, f"date search with expand: {len(found)} instances (3 weekly + 1)")
    check(starts[0] == dt.datetime(2027, 3, 1, 8, 0, tzinfo=dt.timezone.utc), f"first instance in UTC: {starts[0]}")

    # Outside the series: nothing.
    later = cal.search(start=dt.datetime(2027, 6, 1, tzinfo=dt.timezone.utc),
                       end=dt.datetime(2027, 7, 1, tzinfo=dt.timezone.utc), event=True)
    check(len(later) == 0, "no match after COUNT ends")

    # Sync: initial token, then one change.
    synced = cal.objects_by_sync_token(load_objects=False)
    token = synced.sync_token
    check(len(list(synced)) == 2 and bool(token), f"initial sync: {len(list(synced))} objects, token {token}")

    # Edit with the ETag it has (If-Match), then load it back.
    once = cal.event_by_uid("py-once-1")
    once.load()
    once.icalendar_component["SUMMARY"] = "Dentist (moved)"
    once.save()
    again = cal.event_by_uid("py-once-1")
    again.load()
    check(str(again.icalendar_component["SUMMARY"]) == "Dentist (moved)", "edit saved and read back")

    changed = cal.objects_by_sync_token(sync_token=token, load_objects=False)
    check(len(list(changed)) == 1, f"incremental sync sees the one edit ({len(list(changed))})")

    fb = cal.freebusy_request(dt.datetime(2027, 3, 5, tzinfo=dt.timezone.utc),
                              dt.datetime(2027, 3, 6, tzinfo=dt.timezone.utc))
    data = fb.data if isinstance(fb.data, str) else fb.data.decode()
    check("20270305T140000Z/20270305T150000Z" in data, "free-busy-query shows the dentist")

    again.delete()
    remaining = cal.search(start=start, end=end, event=True)
    check(len(remaining) == 1, "deleted event is gone")
    cal.delete()
    check(all(c.get_display_name() != "Staff (python)" for c in principal.calendars()), "calendar deleted")
    print("caldav scenario: all steps passed")


if __name__ == "__main__":
    main(*sys.argv[1:4])
