"""Parses an .ics file with the python `icalendar` package (an independent
parser) and prints how many VEVENTs it holds; exits 1 if it does not parse.

usage: count_events.py FILE.ics
"""
import sys

import icalendar

cal = icalendar.Calendar.from_ical(open(sys.argv[1], "rb").read())
print(len(cal.walk("VEVENT")))
