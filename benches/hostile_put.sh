#!/usr/bin/env bash
# Hostile-object probe (issue 13), on a release build with the shipped demo
# config: how long each of the probe's PUTs takes to be answered, and how long a
# booking-API request waits while they run. Usage:
#   cargo build --release && benches/hostile_put.sh [target/release/calgate]
# Prints one line per measurement; numbers go to BENCHMARKS.md.
set -euo pipefail
bin=${1:-target/release/calgate}
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
port=$((20000 + RANDOM % 20000))
"$bin" serve --config gateway.toml --data "$dir" --listen "127.0.0.1:$port" >"$dir/out" 2>"$dir/err" &
pid=$!
for _ in $(seq 100); do grep -q listening "$dir/out" 2>/dev/null && break; sleep 0.1; done
base="http://127.0.0.1:$port"
dav() { curl -s -o /dev/null -w '%{http_code} %{time_total}' -u demo:demo -X "$1" "$base$2" -H 'Content-Type: text/calendar' --data-binary @"${3:-/dev/null}"; }
dav MKCALENDAR /dav/calendars/demo/staff/ >/dev/null
cal() { printf 'BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:probe\r\n%bEND:VCALENDAR\r\n' "$1"; }
ev() { printf 'BEGIN:VEVENT\r\nUID:%s\r\nDTSTAMP:20261201T000000Z\r\nDTSTART:19000101T000000Z\r\nDTEND:19000101T000100Z\r\n%bEND:VEVENT\r\n' "$1" "$2"; }
cal "$(ev m 'RRULE:FREQ=MINUTELY\r\n')" >"$dir/minutely.ics"
cal "$(ev s 'RRULE:FREQ=SECONDLY\r\n')" >"$dir/secondly.ics"
cal "$(ev d 'RRULE:FREQ=DAILY\r\n')" >"$dir/daily.ics"
rules=""; for n in $(seq 0 999); do rules+="RRULE:FREQ=MINUTELY;BYSECOND=$((n % 60))\r\n"; done
cal "$(ev r "$rules")" >"$dir/rrules.ics"
api() { curl -s -o /dev/null -w '%{time_total}' -H 'Authorization: Bearer demo-key' "$base/api/v1/tenants/demo/bookings?start=2026-12-01T00:00:00Z&end=2026-12-08T00:00:00Z"; }
api >/dev/null # key verified once (argon2), then memoised
for f in minutely secondly rrules daily; do
  for i in 1 2 3; do echo "PUT $f #$i: $(dav PUT "/dav/calendars/demo/staff/$f-$i.ics" "$dir/$f.ics") s"; done
done
# 100 API requests while 4 clients send hostile PUTs back to back.
( for _ in $(seq 50); do dav PUT /dav/calendars/demo/staff/x.ics "$dir/secondly.ics" >/dev/null; done ) &
( for _ in $(seq 50); do dav PUT /dav/calendars/demo/staff/y.ics "$dir/rrules.ics" >/dev/null; done ) &
( for _ in $(seq 50); do dav PUT /dav/calendars/demo/staff/z.ics "$dir/minutely.ics" >/dev/null; done ) &
( for _ in $(seq 50); do dav PUT /dav/calendars/demo/staff/w.ics "$dir/secondly.ics" >/dev/null; done ) &
for _ in $(seq 100); do api; echo; done | sort -n | awk '{a[NR]=$1} END {printf "API GET during hostile PUTs: p50 %.1f ms, p99 %.1f ms, max %.1f ms (n=%d)\n", a[int(NR*0.5)]*1000, a[int(NR*0.99)]*1000, a[NR]*1000, NR}'
wait $(jobs -p | grep -v "^$pid$") 2>/dev/null || true
echo "stderr lines: $(wc -l <"$dir/err")"
# Restart with the objects stored: time until the API answers again.
kill "$pid"; wait "$pid" 2>/dev/null || true
start=$(date +%s.%N)
"$bin" serve --config gateway.toml --data "$dir" --listen "127.0.0.1:$port" >"$dir/out2" 2>>"$dir/err" &
pid=$!
until curl -s -o /dev/null -H 'Authorization: Bearer demo-key' "$base/api/v1/tenants/demo/bookings?start=2026-12-01T00:00:00Z&end=2026-12-08T00:00:00Z"; do sleep 0.02; done
echo "restart to first answer: $(echo "$(date +%s.%N) - $start" | bc) s"
echo "peak RSS: $(grep VmHWM /proc/$pid/status | awk '{print $2/1024 " MiB"}')"
