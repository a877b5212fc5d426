#!/usr/bin/env python3
"""Commit latency through the REST catalog (docs/LAKEHOUSE.md, "REST catalog").

Usage: python3 bench/rest_catalog_commits.py build/dosql [COMMITS]

Starts `dosql lakehouse catalog` on a scratch directory, creates a table, then makes COMMITS
(default 200) appends the way a client does (assert-table-uuid + assert-ref-snapshot-id,
add-snapshot + set-snapshot-ref; the manifest list is not read by the catalog, so none is
written), one at a time, and prints the median latency of the first and last 20 commits, the
p90 of all, and the time of one load of the table at the end (every commit rewrites the whole
metadata JSON, which grows with the snapshots)."""
import json, shutil, statistics, subprocess, sys, tempfile, time, urllib.error, urllib.request

dosql = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 200
scratch = tempfile.mkdtemp(prefix="rest-bench-")
proc = subprocess.Popen([dosql, "lakehouse", "catalog", "--dir", scratch + "/lake", "--port", "0"],
                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
try:
    base = proc.stdout.readline().split()[-1] + "/v1"

    def req(method, path, body=None):
        r = urllib.request.Request(base + path, method=method, data=None if body is None else json.dumps(body).encode(),
                                   headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(r) as f:
                return f.status, json.loads(f.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    req("POST", "/namespaces", {"namespace": ["bench"]})
    _, t = req("POST", "/namespaces/bench/tables",
               {"name": "t", "schema": {"type": "struct", "fields": [{"id": 1, "name": "id", "type": "long", "required": True}]}})
    uuid, parent, lat = t["metadata"]["table-uuid"], None, []
    for i in range(1, n + 1):
        sid = 1000 + i
        snap = {"snapshot-id": sid, "sequence-number": i, "timestamp-ms": int(time.time() * 1000),
                "manifest-list": "file:///nonexistent/snap.avro", "summary": {"operation": "append"}}
        if parent:
            snap["parent-snapshot-id"] = parent
        body = {"requirements": [{"type": "assert-table-uuid", "uuid": uuid},
                                 {"type": "assert-ref-snapshot-id", "ref": "main", "snapshot-id": parent}],
                "updates": [{"action": "add-snapshot", "snapshot": snap},
                            {"action": "set-snapshot-ref", "ref-name": "main", "type": "branch", "snapshot-id": sid}]}
        t0 = time.perf_counter()
        status, out = req("POST", "/namespaces/bench/tables/t", body)
        lat.append((time.perf_counter() - t0) * 1000)
        assert status == 200, (status, out)
        parent = sid
    t0 = time.perf_counter()
    req("GET", "/namespaces/bench/tables/t")
    load = (time.perf_counter() - t0) * 1000
    k = min(20, n)
    print(f"{n} commits: median {statistics.median(lat[:k]):.1f} ms (first {k}), {statistics.median(lat[-k:]):.1f} ms "
          f"(last {k}), p90 {sorted(lat)[int(n * 0.9) - 1]:.1f} ms; one load at {n} snapshots {load:.1f} ms")
finally:
    proc.terminate()
    proc.wait()
    shutil.rmtree(scratch, ignore_errors=True)
