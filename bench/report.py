#!/usr/bin/env python3
"""Benchmark report of a `make bench` VM run (scripts/bench.sh).

Reads the serial log of the run: the lines /init prints around each test
(=== KST: START / RESULT) and the lines the benchmarks print,
    BENCH {json}      one figure set (demand_paging, helper, apf_progress, lib)
    TRACE ...         bench_helper -T: where the time goes
and bench/matrix (what was run and which BENCH lines each entry should
print).  Writes <out>/results.json and <out>/table.md, prints the tables
(medians over the repetitions with min-max; ratios to uffd-missing and to
the no-fault baseline) and draws PNG plots with gnuplot:
    <out>/dpt_rate.png       demand_paging_test pages/s vs vCPUs per mode
    <out>/helper_rate.png    helper-process path pages/s vs faulting threads
    <out>/latency.png        fault latency p50/p99/max per mode (log scale)

--log may be given once per boot (scripts/bench.sh boots again when the
guest died): the runs of all the logs count together.

Exit status 1 if a benchmark program failed (other than a demand_paging_test
mode the binary rejects, which is reported missing), printed no figures at
all, or a guest kernel report names the series' code (a gmem/presence
function in the report's lines); else 0.  A kernel report that does not name
it ends its boot and is listed as a lost boot (docs/benchmarks.md: the
nested-vCPU faults under TCG bring down the test VM's kernel on upstream
paths too; the debug kernel of `make check` / `make stress` is where the
series' own checks run).
"""
import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys

START_RE = re.compile(r"^=== KST: START (\S+)(?: (.*))?$")
RESULT_RE = re.compile(r"^=== KST: RESULT (\S+) (PASS|FAIL|SKIP|TIMEOUT) rc=(\S+)")
BENCH_RE = re.compile(r"BENCH (\{.*\})\s*$")
TRACE_RE = re.compile(r"^(TRACE .*)$")
KERNEL_RE = re.compile(r"=== KST: userspace up at .* kernel (\S+), (\d+) cpus, (MemTotal: .*)$")
REPORT_RE = re.compile(r"\bBUG:|\bWARNING:|Kernel panic|\bOops\b|KASAN|UBSAN:|soft lockup|blocked for more than")

# A kernel report that names the series' code: a function of guest_memfd
# presence tracking (gmem_*, kvm_gmem_*, kvm_async_pf_gmem_*, ...) in the
# report or the lines after it.
OURS_RE = re.compile(r"gmem|presence")
KLINE_RE = re.compile(r"^\s*\[\s*\d+\.\d+\]")
KMSG_PREFIX_RE = re.compile(r"^=== KST kmsg\[[^\]]*\]: ")
REPORT_CONTEXT = 80

# demand_paging_test's words when its nested vCPU triple-faulted: the
# intermittent fault of nested vCPUs under TCG (docs/benchmarks.md), seen with
# every mode and with a kernel without the series.
NESTED_FAULT_RE = re.compile(r"Invalid guest sync status: exit_reason=SHUTDOWN")
DPT_MODES = ["uffd-missing", "uffd-minor", "presence-exit", "presence-wait", "no-fault"]
HELPER_MODES = ["uffd-missing", "uffd-minor", "presence", "presence-engine"]


def read_matrix(path):
    rows = []
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].split()
            if len(line) < 5:
                continue
            kind, bench, mode, n, entry = line[:5]
            rows.append(dict(kind=kind, bench=bench, mode=mode, n=n, entry=entry))
    return rows


def entry_key(name, args):
    # /init names a run by its whole entry ("name:arg:arg", then the
    # arguments again); older logs name the test alone.
    if ":" in name:
        return name
    return name + ("".join(":" + a for a in args.split()) if args else "")


def parse_log(path, boot=1):
    """Runs in order: dict(entry, verdict, rc, bench=[...], trace=[...]);
    the log's metadata; its kernel reports: dict(boot, line, ours)."""
    runs, cur, meta, reports = [], None, {}, []
    with open(path, "rb") as f:
        lines = [raw.decode("utf-8", "replace").rstrip("\r\n") for raw in f]
    for i, l in enumerate(lines):
        m = KERNEL_RE.search(l)
        if m:
            meta.update(kernel=m.group(1), vm_cpus=int(m.group(2)), vm_mem=m.group(3).strip())
        m = START_RE.match(l)
        if m:
            cur = dict(entry=entry_key(m.group(1), (m.group(2) or "").strip()),
                       verdict=None, rc=None, bench=[], trace=[])
            runs.append(cur)
            continue
        m = RESULT_RE.match(l)
        if m and cur is not None:
            cur.update(verdict=m.group(2), rc=m.group(3))
            cur = None
            continue
        if REPORT_RE.search(l) and not l.startswith("=== KST: "):
            # Only the kernel's lines: BENCH lines name the presence modes.
            ctx = [x for x in (KMSG_PREFIX_RE.sub("", x) for x in lines[i:i + REPORT_CONTEXT])
                   if KLINE_RE.match(x)]
            # The guest's console repeats a report in the kmsg lines /init
            # prints after the run: judge each report line once.
            text = KMSG_PREFIX_RE.sub("", l).strip()
            if not any(r["text"] == text for r in reports):
                reports.append(dict(boot=boot, line=l.strip(), text=text,
                                    during=cur["entry"] if cur else None,
                                    ours=any(OURS_RE.search(x) for x in ctx)))
        if cur is None:
            continue
        if NESTED_FAULT_RE.search(l):
            cur["nested_fault"] = l.strip()
        m = BENCH_RE.search(l)
        if m:
            try:
                cur["bench"].append(json.loads(m.group(1)))
            except ValueError:
                cur.setdefault("bad_json", []).append(m.group(1))
            continue
        m = TRACE_RE.match(l)
        if m:
            cur["trace"].append(m.group(1))
    return runs, meta, reports


def median_run(runs, key="pages_per_s"):
    s = sorted(runs, key=lambda r: r[key])
    return s[(len(s) - 1) // 2]


def ratio(a, b):
    return round(a / b, 2) if a and b else None


def fmt(v, nd=0):
    if v is None:
        return "-"
    return ("%." + str(nd) + "f") % v


def host_meta(top, log):
    def out(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, cwd=top, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for l in f:
                if l.startswith("model name"):
                    cpu = l.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    # The QEMU that ran the VM, as scripts/run-vm.sh noted it beside the log.
    try:
        with open(os.path.realpath(log) + ".qemu") as f:
            qemu = f.readline().strip()
    except OSError:
        qemu = out([os.environ.get("QEMU") or "qemu-system-x86_64", "--version"]).split("\n")[0]
    return dict(host_cpu=cpu, host_cores=os.cpu_count(), qemu=qemu,
                commit=out(["git", "rev-parse", "--short", "HEAD"]),
                dirty=bool(out(["git", "status", "--porcelain", "--untracked-files=no"])),
                date=datetime.date.today().isoformat())


def build(matrix, runs):
    """Group the BENCH lines; find what is missing or failed."""
    res = dict(demand_paging=[], helper=[], apf_progress=[], lib=[], trace=[], missing=[], failed=[],
               lost=[])
    expect = {r["entry"]: r for r in matrix}
    dpt = {}            # (mode, vcpus) -> [bench dicts]
    dpt_tried = {}      # (mode, vcpus) -> [rc of runs that printed nothing]
    apf = {}
    for run in runs:
        row = expect.get(run["entry"])
        lines = run["bench"]
        if row is None:
            continue
        if run["verdict"] is None:
            # The guest died in this run (a kernel report, or it stopped):
            # scripts/bench.sh ran it again in the next boot.
            res["lost"].append(dict(entry=run["entry"], mode=row["mode"],
                                    vcpus=int(row["n"]) if row["n"].isdigit() else None,
                                    boot=run.get("boot"), why="the guest died"))
            continue
        if row["bench"] == "demand_paging":
            key = (row["mode"], int(row["n"]))
            if not lines:
                dpt_tried.setdefault(key, []).append("%s rc=%s" % (run["verdict"], run["rc"]))
            if run["verdict"] != "PASS" and key not in [m[:2] for m in res["missing"]]:
                # A run that ended in the nested-vCPU fault, or hung (its
                # vCPU looping in the nested MMU), lost its figures to the
                # emulator: listed with the table.  Any other failure of a
                # mode that ran elsewhere (wrong contents, say) fails the bench.
                lost = run.get("nested_fault") or (run["verdict"] == "TIMEOUT" and "timed out")
                if lost:
                    res["lost"].append(dict(entry=run["entry"], mode=key[0], vcpus=key[1],
                                            boot=run.get("boot"), why=lost))
                elif lines or any(r["entry"] == run["entry"] and r["verdict"] == "PASS" for r in runs):
                    res["failed"].append("%s: %s rc=%s" % (run["entry"], run["verdict"], run["rc"]))
            for b in lines:
                if b.get("bench") == "demand_paging":
                    dpt.setdefault((b.get("mode"), int(b.get("vcpus", 0))), []).append(b)
            continue
        if run["verdict"] != "PASS" or not (lines or run["trace"]):
            res["failed"].append("%s: %s rc=%s%s" % (run["entry"], run["verdict"], run["rc"],
                                                     "" if lines or run["trace"] else ", no figures"))
        if run.get("bad_json"):
            res["failed"].append("%s: unparsable BENCH line" % run["entry"])
        for b in lines:
            kind = b.get("bench")
            if kind == "apf_progress":
                apf.setdefault(b["policy"], []).append(b)
            elif kind in ("helper", "lib"):
                res[kind].append(b)
        res["trace"] += run["trace"]

    for row in matrix:
        if row["bench"] == "demand_paging":
            key = (row["mode"], int(row["n"]))
            if key not in dpt and key not in [m[:2] for m in res["missing"]]:
                tried = dpt_tried.get(key)
                why = "not run" if not tried else "no BENCH line from %s" % ", ".join(
                    "%d x %s" % (tried.count(v), v) for v in sorted(set(tried)))
                res["missing"].append((row["mode"], int(row["n"]), why))
    # demand_paging: medians over the runs
    for (mode, n), bl in sorted(dpt.items(), key=lambda kv: (kv[0][1], mode_order(kv[0][0], DPT_MODES))):
        m = median_run(bl)
        pps = [b["pages_per_s"] for b in bl]
        res["demand_paging"].append(dict(mode=mode, vcpus=n, runs=len(bl), pages_per_s=m["pages_per_s"],
                                         pages_per_s_min=min(pps), pages_per_s_max=max(pps),
                                         pages_per_s_per_vcpu=m.get("pages_per_s_per_vcpu"),
                                         lat_p50_us=m.get("lat_p50_us"), lat_p99_us=m.get("lat_p99_us"),
                                         lat_max_us=m.get("lat_max_us"), all=bl))
    by = {(r["mode"], r["vcpus"]): r for r in res["demand_paging"]}
    for r in res["demand_paging"]:
        r["x_uffd_missing"] = ratio(r["pages_per_s"], by.get(("uffd-missing", r["vcpus"]), {}).get("pages_per_s"))
        r["x_no_fault"] = ratio(r["pages_per_s"], by.get(("no-fault", r["vcpus"]), {}).get("pages_per_s"))
    # helper: the program already gives medians of its repetitions
    res["helper"].sort(key=lambda b: (b["threads"], mode_order(b["mode"], HELPER_MODES)))
    byh = {(b["mode"], b["threads"]): b for b in res["helper"]}
    for b in res["helper"]:
        b["x_uffd_missing"] = ratio(b["pages_per_s"], byh.get(("uffd-missing", b["threads"]), {}).get("pages_per_s"))
    for pol in sorted(apf):
        bl = apf[pol]
        pct = sorted(b["progress_pct"] for b in bl)
        m = median_run(bl, "progress_pct")
        res["apf_progress"].append(dict(policy=pol, runs=len(bl), progress_pct=m["progress_pct"],
                                        progress_pct_min=pct[0], progress_pct_max=pct[-1],
                                        missing_ms=m.get("missing_ms"), b_iters=m.get("b_iters"),
                                        stall_ms=m.get("stall_ms"), all=bl))
    return res


def lost_name(l):
    if l["why"] == "timed out":
        why = "timed out"
    elif l["why"] == "the guest died":
        why = "the guest died, boot %s" % l.get("boot")
    else:
        why = "SHUTDOWN"
    if l.get("vcpus"):
        return "%s at %d vCPU%s (%s)" % (l["mode"], l["vcpus"], "s" if l["vcpus"] > 1 else "", why)
    return "%s (%s)" % (l["entry"], why)


def mode_order(mode, order):
    return order.index(mode) if mode in order else len(order)


def tables(res, meta):
    out = []
    p = out.append
    p("# Benchmarks: %s, kernel %s (release), %s vCPUs under %s TCG on %s host cores (%s); commit %s%s"
      % (meta.get("date"), meta.get("kernel", "?"), meta.get("vm_cpus", "?"), meta.get("qemu") or "QEMU",
         meta.get("host_cores"), meta.get("host_cpu", "?"), meta.get("commit", "?"),
         "+dirty" if meta.get("dirty") else ""))
    p("")
    p("## demand_paging_test (vCPU faults)")
    p("")
    if res["demand_paging"]:
        p("| mode | vCPUs | pages/s (median) | min–max | pages/s/vCPU | p50 µs | p99 µs | max µs | × uffd-missing | × no-fault |")
        p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in res["demand_paging"]:
            p("| %s | %d | %s | %s–%s | %s | %s | %s | %s | %s | %s |" % (
                r["mode"], r["vcpus"], fmt(r["pages_per_s"]), fmt(r["pages_per_s_min"]), fmt(r["pages_per_s_max"]),
                fmt(r["pages_per_s_per_vcpu"]), fmt(r["lat_p50_us"], 1), fmt(r["lat_p99_us"], 1),
                fmt(r["lat_max_us"], 1), fmt(r["x_uffd_missing"], 2), fmt(r["x_no_fault"], 2)))
    else:
        p("(no demand_paging_test figures)")
    if res["missing"]:
        p("")
        p("missing: " + "; ".join("%s at %d vCPU%s (%s)" % (m, n, "s" if n > 1 else "", why)
                                  for m, n, why in res["missing"]))
    if res["lost"]:
        p("")
        p("lost to the nested-vCPU faults under TCG (docs/benchmarks.md), medians over the other runs: "
          + "; ".join(lost_name(l) for l in res["lost"]))
    if meta.get("boots", 1) > 1 or meta.get("lost_boots"):
        p("")
        p("%d boots; %s" % (meta.get("boots", 1), "; ".join(
            "boot %d: a kernel report outside the series' code, during %s: %s"
            % (b["boot"], b["during"] or "no run", b["text"][:100]) for b in meta.get("lost_boots", []))
            or "no kernel report"))
    p("")
    p("## helper process (threads of another process fault through the mapping)")
    p("")
    if res["helper"]:
        p("| mode | threads | pages/s (median) | min–max | p50 µs | p99 µs | max µs | notify µs | install µs | resume µs | × uffd-missing |")
        p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for b in res["helper"]:
            eng = b["mode"] == "presence-engine"
            p("| %s | %d | %s | %s–%s | %s | %s | %s | %s | %s | %s | %s |" % (
                b["mode"], b["threads"], fmt(b["pages_per_s"]), fmt(b["pages_per_s_min"]),
                fmt(b["pages_per_s_max"]), fmt(b["lat_p50_us"], 1), fmt(b["lat_p99_us"], 1),
                fmt(b["lat_max_us"], 1), "-" if eng else fmt(b["notify_p50_us"], 1),
                "-" if eng else fmt(b["install_p50_us"], 1), "-" if eng else fmt(b["resume_p50_us"], 1),
                fmt(b["x_uffd_missing"], 2)))
    else:
        p("(no helper figures)")
    p("")
    p("## async #PF: task B's progress while task A's page is missing")
    p("")
    if res["apf_progress"]:
        p("| policy | progress % of B alone (median) | min–max | runs | page missing ms | A's stall ms | B iterations |")
        p("|---|---:|---:|---:|---:|---:|---:|")
        for a in res["apf_progress"]:
            p("| %s | %s | %s–%s | %d | %s | %s | %s |" % (
                a["policy"], fmt(a["progress_pct"], 1), fmt(a["progress_pct_min"], 1),
                fmt(a["progress_pct_max"], 1), a["runs"], a["missing_ms"], fmt(a["stall_ms"], 1), a["b_iters"]))
    else:
        p("(no async #PF figures)")
    if res["lib"]:
        p("")
        p("## libgmfp engine vs the simplest loop (bench_lib, mmap faults, %s accessors)" % res["lib"][0].get("accessors"))
        p("")
        p("| pattern | server | pages/s (median) | min–max | p50 µs | p99 µs | max µs | installs |")
        p("|---|---|---:|---:|---:|---:|---:|---:|")
        for b in res["lib"]:
            srv = "simple loop" if b["server"] == "simple" else "engine, %d worker%s%s" % (
                b["workers"], "s" if b["workers"] > 1 else "", ", readahead %d" % b["readahead"] if b["readahead"] else "")
            p("| %s | %s | %s | %s–%s | ≤%s | ≤%s | %s | %s |" % (
                b["pattern"], srv, fmt(b["pages_per_s"]), fmt(b["pages_per_s_min"]), fmt(b["pages_per_s_max"]),
                b["lat_p50_us"], b["lat_p99_us"], b["lat_max_us"], b["installs"]))
    if res["trace"]:
        p("")
        p("## where the time goes (bench_helper -T, traced, 1 thread)")
        p("")
        p("```")
        out.extend(res["trace"])
        p("```")
    return out


def gnuplot(script, outdir):
    try:
        r = subprocess.run(["gnuplot"], input=script, text=True, capture_output=True, cwd=outdir, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        return str(e)
    return r.stderr.strip() if r.returncode else ""


def plots(res, outdir):
    if not shutil.which("gnuplot"):
        return ["gnuplot not installed (scripts/deps.sh installs gnuplot-nox): no plots"]
    msgs, made = [], []
    head = ('set terminal pngcairo noenhanced size 800,480 font "sans,10"\n'
            'set grid ytics\nset key outside right\n')

    def rate_plot(name, rows, modes, xkey, xlabel, title):
        present = [m for m in modes if any(r["mode"] == m for r in rows)]
        if not present:
            return
        for m in present:
            with open(os.path.join(outdir, "%s_%s.dat" % (name, m)), "w") as f:
                for r in sorted((r for r in rows if r["mode"] == m), key=lambda r: r[xkey]):
                    f.write("%d %f %f %f\n" % (r[xkey], r["pages_per_s"], r["pages_per_s_min"], r["pages_per_s_max"]))
        xs = sorted({r[xkey] for r in rows})
        s = head + 'set output "%s.png"\nset title "%s"\nset xlabel "%s"\nset ylabel "pages/s (median, bars: min-max)"\n' % (
            name, title, xlabel)
        s += "set xtics (%s)\nset xrange [0.5:%f]\nset yrange [0:*]\n" % (
            ", ".join('"%d" %d' % (x, x) for x in xs), max(xs) + 0.5)
        s += "plot " + ", ".join('"%s_%s.dat" using 1:2:3:4 with yerrorlines lw 2 title "%s"' % (name, m, m)
                                 for m in present) + "\n"
        err = gnuplot(s, outdir)
        if err:
            msgs.append("%s.png: %s" % (name, err))
        else:
            made.append(name + ".png")

    rate_plot("dpt_rate", res["demand_paging"], DPT_MODES, "vcpus", "vCPUs",
              "demand_paging_test: paging rate vs vCPUs (release kernel, TCG)")
    rate_plot("helper_rate", res["helper"], HELPER_MODES, "threads", "faulting threads (another process)",
              "helper process: paging rate vs faulting threads (release kernel, TCG)")

    # latency: p50/p99/max per mode, clustered bars, log scale
    rows = []
    for r in res["demand_paging"]:
        if r["lat_p50_us"] is not None:
            rows.append(("vCPU %s/%d" % (r["mode"], r["vcpus"]), r["lat_p50_us"], r["lat_p99_us"], r["lat_max_us"]))
    for b in res["helper"]:
        rows.append(("helper %s/%d" % (b["mode"], b["threads"]), b["lat_p50_us"], b["lat_p99_us"], b["lat_max_us"]))
    if rows:
        with open(os.path.join(outdir, "latency.dat"), "w") as f:
            for name, a, b, c in rows:
                f.write('"%s" %f %f %f\n' % (name, max(a, 0.1), max(b, 0.1), max(c, 0.1)))
        s = head.replace("800,480", "%d,520" % max(800, 34 * len(rows) + 200))
        s += 'set output "latency.png"\nset title "fault latency: first touch -> access returns (mode/vCPUs or threads)"\n'
        s += 'set ylabel "us (log scale)"\nset logscale y\nset style data histograms\nset style histogram clustered gap 1\n'
        top = max(max(r[1:]) for r in rows) * 2.5
        s += 'set yrange [1:%f]\n' % top
        s += 'set style fill solid 0.8 border -1\nset boxwidth 0.9\nset xtics rotate by -40 scale 0 font ",8"\n'
        s += 'set key inside top left horizontal\nset bmargin 8\nset rmargin 8\n'
        s += 'plot "latency.dat" using 2:xtic(1) title "p50", "" using 3 title "p99", "" using 4 title "max"\n'
        err = gnuplot(s, outdir)
        if err:
            msgs.append("latency.png: %s" % err)
        else:
            made.append("latency.png")
    for f in os.listdir(outdir):
        if f.endswith(".dat"):
            os.unlink(os.path.join(outdir, f))
    return msgs + ["plots: " + ", ".join(os.path.join(outdir, m) for m in made)] if made else msgs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--log", action="append", help="a boot's serial log (once per boot; default out/logs/latest.log)")
    ap.add_argument("--matrix", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "matrix"))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default="out/bench")
    ap.add_argument("--no-plots", action="store_true")
    a = ap.parse_args()
    top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    logs = a.log or ["out/logs/latest.log"]
    runs, meta, reports = [], {}, []
    for boot, log in enumerate(logs, 1):
        r, m, rep = parse_log(log, boot)
        for run in r:
            run["boot"] = boot
        runs += r
        reports += rep
        for k, v in m.items():
            meta.setdefault(k, v)
    meta.update(host_meta(top, logs[0]))
    meta["log"] = [os.path.realpath(l) for l in logs]
    meta["boots"] = len(logs)
    meta["kernel_reports"] = reports
    # A boot's first report outside the series' code is what ended it (with
    # oops=panic), or the first sign of the corruption: one line per boot.
    meta["lost_boots"] = [r for r in reports if not r["ours"] and
                          r is next(x for x in reports if x["boot"] == r["boot"] and not x["ours"])]
    meta["reps"] = a.reps
    res = build(read_matrix(a.matrix), runs)
    os.makedirs(a.out, exist_ok=True)
    doc = dict(meta=meta, **res)
    doc["missing"] = [dict(mode=m, vcpus=n, why=w) for m, n, w in res["missing"]]
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump(doc, f, indent=1)
    lines = tables(res, meta)
    with open(os.path.join(a.out, "table.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    print()
    if not a.no_plots:
        for m in plots(res, a.out):
            print(m)
    print("results: %s, %s" % (os.path.join(a.out, "results.json"), os.path.join(a.out, "table.md")))
    bad = list(res["failed"])
    ours = [r for r in reports if r["ours"]]
    if ours:
        bad.append("kernel report naming the series' code (boot %d): %s" % (ours[0]["boot"], ours[0]["text"][:120]))
    if not (res["demand_paging"] or res["helper"] or res["apf_progress"] or res["lib"]):
        bad.append("no BENCH figures in %s" % " ".join(logs))
    for b in bad:
        print("bench: FAILED: " + b)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
