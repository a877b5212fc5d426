#!/usr/bin/env python3
"""Helpers of bench/suite.sh (stdlib only): the contention guard and the one table.

  suite_report.py quiet THRESH MAXWAIT      wait (<= MAXWAIT s) until CPU used by other processes
                                            (not kernel threads) stays below THRESH % for 1 s
  suite_report.py wrap OUT -- CMD...        run CMD (stdout passed through), write to OUT its
                                            wall time, exit code and the foreign CPU meanwhile
  suite_report.py clean RAW CASE R          1 if CASE has >= R clean runs in RAW, else 0
  suite_report.py table RAW MACHINE OUT_MD  the table (stdout and OUT_MD)
"""
import json, math, os, re, subprocess, sys, time

HZ = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1


def _stat(pid):
    try:
        with open("/proc/%s/stat" % pid) as f:
            s = f.read()
    except OSError:
        return None
    r = s[s.rfind(")") + 2:].split()
    return int(r[1]), int(r[11]) + int(r[12])  # ppid, utime+stime


def snap():
    """(busy jiffies of the machine, jiffies of kernel threads, time)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    kth = 0
    for d in os.listdir("/proc"):
        if d.isdigit():
            x = _stat(d)
            if x and x[0] == 2:
                kth += x[1]
    return v[0] + v[1] + v[2] + v[7], kth, time.time()


def pct_of_machine(jiffies, wall):
    return round(100.0 * jiffies / (max(wall, 1e-6) * HZ * NCPU), 1)


def cmd_quiet(thresh, maxwait):
    t0 = time.time()
    while True:
        a = snap()
        time.sleep(1.0)
        b = snap()
        f = pct_of_machine(max(0, (b[0] - a[0]) - (b[1] - a[1])), b[2] - a[2])
        waited = time.time() - t0
        if f < thresh or waited >= maxwait:
            print(json.dumps({"quiet_foreign_cpu_pct": f, "quiet_waited_s": round(waited, 1)}))
            return


def cmd_wrap(out, argv):
    a = snap()
    p = subprocess.Popen(argv)
    _, status, ru = os.wait4(p.pid, 0)
    b = snap()
    own = (ru.ru_utime + ru.ru_stime) * HZ
    wall = b[2] - a[2]
    rc = os.waitstatus_to_exitcode(status)
    with open(out, "w") as f:
        json.dump({"rc": rc, "wall_s": round(wall, 2),
                   "foreign_cpu_pct": pct_of_machine(max(0.0, (b[0] - a[0]) - own - (b[1] - a[1])), wall),
                   "own_cpu_pct": pct_of_machine(own, wall)}, f)
    sys.exit(rc)


def load(raw):
    rows = []
    for line in open(raw):
        line = line.strip()
        if line:
            rows.append(json.loads(line))
    return rows


def cmd_clean(raw, case, reps):
    n = sum(1 for r in load(raw) if r.get("case") == case and not r.get("contended") and not r.get("failed"))
    print(1 if n >= reps else 0)


def median(v):
    v = sorted(x for x in v if x is not None)
    if not v:
        return None
    m = len(v) // 2
    return v[m] if len(v) % 2 else (v[m - 1] + v[m]) / 2


def fmt(x, unit=""):
    if x is None:
        return "-"
    if unit == "ms":
        return "%.3f ms" % (x / 1000.0)
    if abs(x) >= 1e6:
        return "%.2f M%s" % (x / 1e6, unit)
    if abs(x) >= 1e4:
        return "%.1f k%s" % (x / 1e3, unit)
    return "{:,.0f}{}".format(x, unit)


class Cases:
    """Runs grouped by case id; medians over clean (uncontended) runs when there are any."""

    def __init__(self, rows):
        self.by = {}
        for r in rows:
            self.by.setdefault(r["case"], []).append(r)

    def runs(self, case):
        rs = [r for r in self.by.get(case, []) if not r.get("failed")]
        ok = [r for r in rs if not r.get("contended")]
        return (ok or rs), len(ok), len(self.by.get(case, []))

    def med(self, case, key):
        rs, _, _ = self.runs(case)
        return median([r.get(key) for r in rs])

    def spread(self, case, key):
        rs, _, _ = self.runs(case)
        v = [r.get(key) for r in rs if r.get(key) is not None]
        return (min(v), max(v)) if v else (None, None)


def gbench(path):
    """{run_name: {median aggregate}} from a Google Benchmark JSON file."""
    try:
        doc = json.load(open(path))
    except (OSError, ValueError):
        return {}
    out = {}
    for b in doc.get("benchmarks", []):
        if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "median":
            continue
        out[b.get("run_name", b["name"])] = b
    return out


def cmd_table(raw, machine_path, out_md):
    rows = load(raw)
    machine = json.load(open(machine_path))
    C = Cases(rows)
    cpus_list = machine.get("cpus_variants", ["0", "all"])
    shapes = machine["shapes"]
    lat_n = machine["latency_n"]
    lines, notes, details = [], [], []

    def best(engine, kind, shape, key, lower=False):
        """(value, cpus, case) of the better of the cpus variants (each side at its best)."""
        cands = []
        for c in cpus_list:
            case = "%s %s %s cpus=%s" % (kind, shape, engine, c)
            v = C.med(case, key)
            if v is not None:
                cands.append((v, c, case))
        if not cands:
            return None, None, None
        return (min if lower else max)(cands, key=lambda t: t[0])

    def label(c):
        return "pinned" if c == "0" else ("unpinned" if c == "all" else "cpus=" + str(c))

    def tag(c, case):
        """(pinned) / (unpinned); '; contended' when the median is over contended runs only."""
        if not c:
            return ""
        _, clean, _ = C.runs(case)
        return " (%s%s)" % (label(c), "" if clean else "; contended runs only")

    def row(figure, key, kind, shape, unit, target_ratio, lower=False, target_text=None):
        d, dc, dcase = best("dosql", kind, shape, key, lower)
        p, pc, pcase = best("pg", kind, shape, key, lower)
        if d is None and p is None:  # not run (--remote-only)
            return
        ratio = None
        if d and p:
            ratio = (p / d) if lower else (d / p)
        met = "-" if ratio is None else ("met" if ratio > target_ratio or (target_ratio > 1 and ratio >= target_ratio) else "**not met**")
        tt = target_text or ("ratio > 1" if target_ratio == 1 else ">= %gx PostgreSQL" % target_ratio)
        lines.append("| %s | %s%s | %s | %s%s | %s | %s |" % (
            figure, fmt(d, unit), tag(dc, dcase), tt, fmt(p, unit), tag(pc, pcase),
            "-" if ratio is None else "%.2fx" % ratio, met))

    lines.append("| figure | dosql | target | PostgreSQL 15 + wal2json | ratio | met? |")
    lines.append("|---|---|---|---|---|---|")
    s1, s100, sbig = shapes["k1"], shapes["k100"], shapes["big"]
    n1, nb = s1.split("x")[0], sbig.split("x")[1]
    row("commit throughput, single-row txns (%s statements, mix 60/30/10 I/U/D), txn/s" % n1,
        "commit_txn_per_s", "run", s1, "", 1)
    row("commit throughput, 100-row txns (%s), txn/s" % s100, "commit_txn_per_s", "run", s100, "", 1)
    row("one %s-row INSERT transaction (%s), rows/s" % (nb, sbig), "stmt_per_s", "run", sbig, "", 1)
    for sh, what in ((s100, "100-row txns"), (s1, "single-row txns"), (sbig, "one big txn")):
        row("decode + deliver to 1 consumer, JSON to a file (%s workload, %s), changes/s" % (sh, what),
            "decode_changes_per_s", "run", sh, "", 5)
    row("commit-to-consumer latency p50 (%d single-row INSERTs, 1 ms apart)" % lat_n, "row_p50_us", "lat",
        str(lat_n), "ms", 1, lower=True, target_text="lower (ratio PG/dosql > 1)")
    row("commit-to-consumer latency p99 (same runs)", "row_p99_us", "lat", str(lat_n), "ms", 1, lower=True,
        target_text="lower (ratio PG/dosql > 1)")

    # ---- remote subscribers (issue 18): in-process vs remote (same runs) vs pg_recvlogical ----
    remote = []
    def rbest(kind, shape, key, lower=False):
        """the better cpus variant of a dosql remote case, chosen on `key` (its remote figure)."""
        return best("dosql", kind, shape, key, lower)

    def rrow(figure, kind, shape, key_in, key_rm, unit, pg_kind=None, pg_key=None, lower=False):
        v, c, case = rbest(kind, shape, key_rm, lower)
        if case is None:
            return
        vin = C.med(case, key_in)
        p = pc = pcase = None
        if pg_kind:
            p, pc, pcase = best("pg", pg_kind, shape, pg_key, lower)
        r_in = (v / vin) if (v and vin) else None
        r_pg = (v / p) if (v and p) else None
        remote.append("| %s | %s | %s%s | %s | %s%s | %s |" % (
            figure, fmt(vin, unit), fmt(v, unit), tag(c, case), "-" if r_in is None else "%.2fx" % r_in,
            fmt(p, unit), tag(pc, pcase) if pcase else "", "-" if r_pg is None else "%.2fx" % r_pg))

    rrow("delivery of the %s workload, every event as JSON to a file, changes/s" % s100, "remote", s100,
         "inproc_json_changes_per_s", "remote_json_changes_per_s", "", "run", "decode_changes_per_s")
    rrow("delivery of the %s workload, batches decoded only (the transport), changes/s" % s100, "remote", s100,
         "inproc_views_changes_per_s", "remote_views_changes_per_s", "")
    rrow("commit -> consumer latency p50 (%d single-row INSERTs, 1 ms apart)" % lat_n, "rlat", str(lat_n),
         "inproc_row_p50_us", "remote_row_p50_us", "ms", "lat", "row_p50_us", lower=True)
    rrow("commit -> consumer latency p99 (same runs)", "rlat", str(lat_n),
         "inproc_row_p99_us", "remote_row_p99_us", "ms", "lat", "row_p99_us", lower=True)
    if remote:
        cm = [C.med("remote %s dosql cpus=%s" % (s100, c), "connect_ms") for c in cpus_list]
        cm = [x for x in cm if x is not None]
        remote = ["", "Remote subscribers (issue 18): dosql's consumer actor in-process and in a second process "
                  "over 127.0.0.1 (CAF middleman), in the same run (`peer_bench remote-run` / `remote-latency`), "
                  "beside PostgreSQL's pg_recvlogical + wal2json over TCP (the `run`/`lat` cases above). The "
                  "in-process figure is from the same runs as the remote one (the variant given); ratios "
                  "are remote / other: throughput > 1 = remote faster, latency < 1 = remote lower%s:" % (
                      "; remote::connect took %.1f ms (median), not in the delivery time" % median(cm) if cm else ""),
                  "",
                  "| figure | in-process consumer actor | remote consumer actor | remote / in-process | "
                  "PostgreSQL pg_recvlogical | remote / PostgreSQL |",
                  "|---|---|---|---|---|---|"] + remote

    # ---- dosql's own benchmarks (no peer): figure vs target -----------------------------------
    def micro(figure, value, target, ok, ratio="-", peer="-"):
        lines.append("| %s | %s | %s | %s | %s | %s |" % (
            figure, value, target, peer, ratio, "-" if ok is None else ("met" if ok else "**not met**")))

    wb = gbench(machine.get("wal_bench_json", ""))
    def g(bs, name, field):
        b = bs.get(name)
        return b.get(field) if b else None
    a0 = g(wb, "BM_append/sync:0/batch:1000/real_time", "items_per_second")
    a1t = g(wb, "BM_append/sync:1/batch:1000/real_time", "real_time")
    a0t = g(wb, "BM_append/sync:0/batch:1000/real_time", "real_time")
    a2t = g(wb, "BM_append/sync:2/batch:1000/real_time", "real_time")
    rd = g(wb, "BM_read/1000000/real_time", "items_per_second")
    if wb:
        micro("WAL unsynced append, 200-byte images (wal_bench)", fmt(a0, " entries/s"), ">= 1 M entries/s",
              a0 is not None and a0 >= 1e6)
        micro("WAL sequential read, page cache, CRC checked", fmt(rd, " entries/s"), ">= 2 M entries/s",
              rd is not None and rd >= 2e6)
        if a0t and a1t:
            o1 = a1t / a0t - 1
            o2 = (a2t / a0t - 1) if a2t else None
            micro("WAL fdatasync per 1,000-entry batch, over unsynced", "+%.0f %% synchronous%s" % (
                100 * o1, ", +%.0f %% pipelined" % (100 * o2) if o2 is not None else ""), "< 10 %",
                  min(o1, o2 if o2 is not None else o1) < 0.10)
    db = gbench(machine.get("db_bench_json", ""))
    if db:
        for th, tgt in ((1, 1.0), (4, 3.0)):
            d = g(db, "BM_commit_1row/dosql/real_time/threads:%d" % th, "items_per_second")
            s = g(db, "BM_commit_1row/sqlite_full/real_time/threads:%d" % th, "items_per_second")
            r = d / s if d and s else None
            micro("single-row commits, %d writer%s, vs SQLite synchronous=FULL (db_bench)" % (th, "s" if th > 1 else ""),
                  fmt(d, "/s"), ">= %.1fx SQLite" % tgt, None if r is None else r >= tgt,
                  "-" if r is None else "%.2fx" % r, "SQLite: " + fmt(s, "/s"))
        d = g(db, "BM_txn_1000rows/dosql/real_time", "real_time")
        s = g(db, "BM_txn_1000rows/sqlite_full/real_time", "real_time")
        r = d / s if d and s else None
        micro("1,000-row transaction, time vs SQLite synchronous=FULL", "-" if d is None else "%.2f ms" % d,
              "<= 1.4x the time", None if r is None else r <= 1.4, "-" if r is None else "%.2fx" % r,
              "SQLite: " + ("-" if s is None else "%.2f ms" % s))
    cdc = machine.get("cdc_bench", {})
    def cdcval(name, key):
        try:
            txt = open(cdc[name]).read()
        except (KeyError, OSError):
            return None
        m = re.search(r"%s=([0-9.]+)" % key, txt)
        return float(m.group(1)) if m else None
    n_entries = cdc.get("entries", "?")
    for name, fig, tgt in (("raw1", "change stream, 1 consumer, raw entries (cdc_bench, %s-row WAL)" % n_entries, 2e6),
                           ("event1", "change stream, 1 consumer, decoded events", 1e6),
                           ("raw8", "change stream, 8 consumers in total", 4e6)):
        v = cdcval(name, "median")
        if name in cdc:
            micro(fig, fmt(v, "/s"), ">= %s/s" % fmt(tgt), v is not None and v >= tgt)
    if "rss" in cdc:
        v = cdcval("rss", "delta_peak_MB")
        micro("RSS with a stalled consumer, %s-entry backlog" % cdc.get("rss_rows", "?"),
              "-" if v is None else "+%.1f MB" % v, "within 50 MB of idle", v is not None and v <= 50)

    # ---- details: every case, every variant ---------------------------------------------------
    details.append("| case | engine | cpus | clean/runs | median | min - max | foreign CPU % (median) | verified |")
    details.append("|---|---|---|---|---|---|---|---|")
    keys = [("run", s1, "commit_txn_per_s", "commits, txn/s"), ("run", s100, "commit_txn_per_s", "commits, txn/s"),
            ("run", sbig, "stmt_per_s", "rows/s"),
            ("run", s100, "decode_changes_per_s", "delivery, changes/s"),
            ("run", s1, "decode_changes_per_s", "delivery, changes/s"),
            ("run", sbig, "decode_changes_per_s", "delivery, changes/s"),
            ("lat", str(lat_n), "row_p50_us", "latency p50"), ("lat", str(lat_n), "row_p99_us", "latency p99"),
            ("remote", s100, "inproc_json_changes_per_s", "delivery to an in-process consumer actor, changes/s"),
            ("remote", s100, "remote_json_changes_per_s", "delivery to a remote consumer actor, changes/s"),
            ("rlat", str(lat_n), "inproc_row_p50_us", "latency p50, in-process consumer actor"),
            ("rlat", str(lat_n), "remote_row_p50_us", "latency p50, remote consumer actor"),
            ("rlat", str(lat_n), "inproc_row_p99_us", "latency p99, in-process consumer actor"),
            ("rlat", str(lat_n), "remote_row_p99_us", "latency p99, remote consumer actor")]
    for kind, shape, key, what in keys:
        for eng in ("dosql", "pg"):
            for c in cpus_list:
                case = "%s %s %s cpus=%s" % (kind, shape, eng, c)
                rs, clean, total = C.runs(case)
                if not total:
                    continue
                unit = "ms" if kind in ("lat", "rlat") else ""
                lo, hi = C.spread(case, key)
                ver = [r.get("verified") for r in rs if "verified" in r]
                vtxt = "-" if not ver else ("yes (%d/%d)" % (sum(1 for v in ver if v is True), len(ver))
                                            if all(v is True for v in ver) else "**NO**: %s" % next(
                                                (r.get("verify_detail") or r.get("first_diff") or "?")
                                                for r in rs if r.get("verified") is not True))
                details.append("| %s %s | %s | %s | %d/%d | %s | %s - %s | %s | %s |" % (
                    shape, what, eng, label(c), clean, total,
                    fmt(C.med(case, key), unit), fmt(lo, unit), fmt(hi, unit),
                    fmt(C.med(case, "foreign_cpu_pct")), vtxt))
    for sh in (s100, sbig):  # where dosql's delivery time goes (peer_bench's decode_stages)
        for c in cpus_list:
            rs, _, _ = C.runs("run %s dosql cpus=%s" % (sh, c))
            st = [r["decode_stages"] for r in rs if r.get("decode_stages")]
            if not st:
                continue
            k = lambda name: median([x.get(name) for x in st])
            tot = k("plus_write_s (the timed pass)")
            ch = median([r.get("changes") for r in rs])
            if tot and ch:
                notes.append("- dosql delivery, %s, %s: %.0f ms for %d changes: reading the subscription %.0f ms, "
                             "+ cdc::to_event %.0f ms, + cdc::to_json %.0f ms, + writing the file %.0f ms "
                             "(each stage measured by reading the stream again up to it)." % (
                                 sh, label(c), 1000 * tot, ch, 1000 * k("subscribe_only_s"),
                                 1000 * (k("plus_to_event_s") - k("subscribe_only_s")),
                                 1000 * (k("plus_to_json_s") - k("plus_to_event_s")),
                                 1000 * (tot - k("plus_to_json_s"))))
    failed = [r for r in rows if r.get("failed")]
    for r in failed:
        notes.append("- case `%s` rep %s FAILED: %s" % (r.get("case"), r.get("rep"), r.get("error", "?")))
    bad = [r for r in rows if r.get("verified") is False]
    for r in bad[:5]:
        notes.append("- `%s` rep %s: change stream NOT verified: %s %s" % (
            r["case"], r.get("rep"), r.get("verify_detail"), json.dumps(r.get("first_diff"))))
    cont = [r for r in rows if r.get("contended")]
    if cont:
        notes.append("- %d of %d runs were contended (other processes used > %s %% of the machine) and are "
                     "left out of the medians where a clean run exists." % (
                         len(cont), len(rows), machine.get("max_foreign", 10)))

    m = machine
    head = ["# dosql benchmark suite vs PostgreSQL 15 + wal2json (%s)" % m.get("stamp", ""), "",
            "Command: `%s`" % m.get("command", "bench/suite.sh"), "",
            "Machine: %s" % m.get("description", "?"), "",
            "Medians of %s repetitions per case (pinned and unpinned variants alternated, dosql and "
            "PostgreSQL alternated); each side's better variant is compared (pinned = the engine and "
            "every client on CPU 0, the peer README's recommended comparison for an embedded engine; "
            "unpinned = all CPUs). Same durability: PostgreSQL fsync=on, synchronous_commit=on; dosql "
            "returns from every commit once it is fdatasync'd." % m.get("reps", "?"), ""]
    text = "\n".join(head + lines + remote + [""] + (["Notes:"] + notes + [""] if notes else []) +
                     ["Every case and variant:", ""] + details) + "\n"
    with open(out_md, "w") as f:
        f.write(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    cmd, a = sys.argv[1], sys.argv[2:]
    if cmd == "quiet":
        cmd_quiet(float(a[0]), float(a[1]))
    elif cmd == "wrap":
        cmd_wrap(a[0], a[2:] if a[1] == "--" else a[1:])
    elif cmd == "clean":
        cmd_clean(a[0], a[1], int(a[2]))
    elif cmd == "table":
        cmd_table(a[0], a[1], a[2])
    else:
        sys.exit(__doc__)
