#!/usr/bin/env python3
"""Pages through every tenant of a logbook-compare work directory the way the benchmark's export does (JSONL,
oldest first, 1,000 per request, one request at a time on one keep-alive connection), against a server started
with `logbook-compare __serve WORK_DIR/logbook-data PORT`. Used for server-side profiles of the export.

Usage: export-pages.py PORT WORK_DIR [TENANTS]
Prints events, events/s overall, and events/s counting only the time inside requests.
"""
import http.client
import json
import sys
import time

port, work_dir = int(sys.argv[1]), sys.argv[2]
tenants = json.load(open(f"{work_dir}/plan.json"))["tenants"]
if len(sys.argv) > 3:
    tenants = tenants[: int(sys.argv[3])]
conn = http.client.HTTPConnection("127.0.0.1", port)
events, started, in_requests = 0, time.time(), 0.0
for tenant in tenants:
    cursor = ""
    while True:
        sent = time.time()
        conn.request("GET", f"/v1/events?tenant={tenant}&format=jsonl&order=asc&limit=1000&cursor={cursor}",
                     headers={"Authorization": "Bearer bench-admin"})
        body = conn.getresponse().read()
        in_requests += time.time() - sent
        lines = body.split(b"\n")
        if lines[-1] == b"":
            lines.pop()
        trailer = json.loads(lines.pop())
        events += len(lines)
        cursor = trailer.get("next_cursor")
        if not cursor:
            break
print(f"{events} events, {events / (time.time() - started):.0f} events/s, "
      f"{events / in_requests:.0f} events/s inside requests")
