#!/usr/bin/env python3
"""Verdict of one VM test run, from the guest's serial log.

Reads the lines /init (scripts/init.sh) prints:
    === KST: START <test> [args]     (<test>: "name", or "name:arg1:arg2" with arguments)
    === KST: RESULT <test> PASS|FAIL|SKIP|TIMEOUT rc=<rc> time=<secs>s
    === KST kmsg[<where>]: <kernel message>
    === KST: END pass=.. fail=.. skip=.. ...
plus whatever the kernel printed on the console, and decides:

  * a test FAILs if it failed/timed out in the guest (unless it is listed in
    configs/tcg-known-failures.txt: XFAIL), if a kernel report (WARNING, BUG,
    Oops, lockdep, KASAN, hung task, soft lockup, ...) was logged while it ran,
    or if it never finished (guest panic or hang) / never ran;
  * a kernel report outside any test (boot, kmemleak scan, shutdown) and a
    missing END line are failures of their own ("kernel" / "vm" entries);
  * kmemleak "unreferenced object" is a kernel report.

Prints one verdict line per test, log excerpts for each failure, and as the
very last line "N passed, N failed, N skipped" (XFAIL counts as skipped).
Exit status 0 iff nothing failed.
"""
import argparse
import re
import sys

REPORT_PATTERNS = [
    r"Kernel panic",
    r"\bOops\b",
    r"general protection fault",
    r"\bBUG:",                      # KASAN, NULL deref, sleeping in atomic, soft lockup, workqueue lockup, bad page ...
    r"kernel BUG at",
    r"\bWARNING:",                  # WARN_ON, lockdep ("WARNING: possible circular locking ..."), RCU
    r"possible circular locking",
    r"possible recursive locking",
    r"inconsistent lock state",
    r"suspicious RCU usage",
    r"bad unlock balance",
    r"held lock freed",
    r"lock held when returning to user space",
    r"possible irq lock inversion",
    r"INFO: trying to register non-static key",
    r"\bKASAN\b",
    r"UBSAN:",
    r"unreferenced object 0x",
    r"suspected memory leak",
    r"blocked for more than \d+ seconds",
    r"soft lockup",
    r"hard LOCKUP",
    r"rcu.*detected stalls",
    r"workqueue lockup",
    r"list_(add|del) corruption",
    r"Bad page (state|map)",
    r"Attempted to kill init",
]
REPORT_RE = re.compile("|".join("(?:%s)" % p for p in REPORT_PATTERNS))
# The lines our own /init prints about itself are not kernel reports.
OWN_LINE = re.compile(r"^=== KST: ")

START_RE = re.compile(r"^=== KST: START (\S+)")
RESULT_RE = re.compile(r"^=== KST: RESULT (\S+) (PASS|FAIL|SKIP|TIMEOUT) rc=(\S+) time=(\S+)s")
END_RE = re.compile(r"^=== KST: END ")
KMSG_RE = re.compile(r"^=== KST (?:kmsg\[([^\]]*)\]|kmemleak): ")


def load_known(path):
    known = {}
    if not path:
        return known
    try:
        with open(path) as f:
            for line in f:
                line = line.split("#", 1)
                name = line[0].strip()
                if name:
                    known[name.split()[0]] = (line[1].strip() if len(line) > 1 else "")
    except FileNotFoundError:
        pass
    return known


def excerpt(lines, lo, hi, limit, out, indent="    | "):
    lo = max(lo, 0)
    hi = min(hi, len(lines))
    sel = lines[lo:hi]
    if len(sel) > limit:
        sel = sel[-limit:]
    for l in sel:
        out.append(indent + l)


FAILURE_LINE = re.compile(r"^not ok |Test Assertion Failure|^#\s+FAIL |timeout|unkillable|" + REPORT_RE.pattern)


def test_excerpt(lines, lo, hi, out, indent="    | "):
    """A failed test's output: its first lines, the context of each failing
    TAP case / assertion / kernel report, and its last lines."""
    hi = min(hi, len(lines))
    if hi - lo <= 80:
        excerpt(lines, lo, hi, 80, out, indent)
        return
    keep = set(range(lo, lo + 3)) | set(range(hi - 12, hi))
    hits = [i for i in range(lo, hi) if FAILURE_LINE.search(lines[i])]
    for i in hits[:6]:
        keep |= set(range(max(lo, i - 15), min(hi, i + 25)))
    prev = None
    for i in sorted(keep):
        if prev is not None and i != prev + 1:
            out.append(indent + "[... %d lines ...]" % (i - prev - 1))
        out.append(indent + lines[i])
        prev = i


PROGRESS_RE = re.compile(r"^=== KST: (START|RESULT|END|kmemleak: scanned|.*(timeout|unkillable|not in the initramfs|kst\.crash))")


def follow(verbose):
    """Line by line, as the guest prints them.  verbose 0: progress lines and
    kernel reports; 1: also each test's own output; 2: the whole console."""
    in_test = False
    for raw in sys.stdin.buffer:
        l = raw.decode("utf-8", "replace").rstrip("\r\n")
        if START_RE.match(l):
            in_test = True
        elif RESULT_RE.match(l):
            in_test = False
        if verbose >= 2 or (verbose == 1 and in_test and not OWN_LINE.match(l)):
            print(l, flush=True)
        elif PROGRESS_RE.match(l):
            print("  vm: " + l[len("=== KST: "):], flush=True)
        elif not KMSG_RE.match(l) and not OWN_LINE.match(l) and REPORT_RE.search(l):
            print("  vm! " + l, flush=True)
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--log")
    ap.add_argument("--tests", default="", help="tests expected to run (space separated)")
    ap.add_argument("--known", default="", help="configs/tcg-known-failures.txt")
    ap.add_argument("--qemu-rc", type=int, default=0)
    ap.add_argument("--hard-timeout", default="", help="seconds; set when the VM was killed by it")
    ap.add_argument("--stall", default="", help="why the stall watchdog killed the VM (run-vm.sh STALL=)")
    ap.add_argument("--follow", action="store_true",
                    help="live view: copy the serial console from stdin, keeping progress lines and kernel reports")
    ap.add_argument("--verbose", type=int, default=0, help="with --follow: 1 = test output too, 2 = everything")
    a = ap.parse_args()
    if a.follow:
        return follow(a.verbose)
    with open(a.log, "rb") as f:
        raw = f.read().decode("utf-8", "replace")
    lines = [l.rstrip("\r") for l in raw.split("\n")]
    known = load_known(a.known)
    # A test run with arguments is named "name:arg1:arg2" in the log, so
    # that several runs of one test are judged one by one.
    expected = a.tests.split()

    # One entry per run: an entry listed n times in TESTS (make bench's
    # repetitions) is judged n times, its k-th START and RESULT being run k.
    order = []          # runs (name, k) in the order we saw or expected them
    info = {}           # run -> dict(start=line, end=line, verdict, rc, time)
    reports = []        # (line index, text, owner run)
    ended = None
    current = None      # run in progress at this point of the log
    started = {}        # name -> runs of it started so far in the log

    def entry(run):
        if run not in info:
            info[run] = {"start": None, "end": None, "verdict": None, "rc": None, "time": None}
            order.append(run)
        return info[run]

    def last_run(name):
        return (name, max(started.get(name, 0), 1))

    listed = {}
    for t in expected:
        listed[t] = listed.get(t, 0) + 1
        entry((t, listed[t]))
    for i, l in enumerate(lines):
        m = START_RE.match(l)
        if m:
            name = m.group(1)
            started[name] = started.get(name, 0) + 1
            current = (name, started[name])
            entry(current)["start"] = i
            continue
        m = RESULT_RE.match(l)
        if m:
            name = m.group(1)
            run = current if current and current[0] == name else last_run(name)
            e = entry(run)
            e.update(end=i, verdict=m.group(2), rc=m.group(3), time=m.group(4))
            current = None
            continue
        if END_RE.match(l):
            ended = i
            continue
        if OWN_LINE.match(l):
            continue
        if REPORT_RE.search(l):
            km = KMSG_RE.match(l)
            if km:
                owner = km.group(1) if km.group(1) is not None else "kmemleak"
                owner = current if current and current[0] == owner else last_run(owner)
                if owner not in info:
                    owner = None
            else:
                owner = current
            reports.append((i, l, owner))

    runs_of = {}
    for name, _ in order:
        runs_of[name] = runs_of.get(name, 0) + 1

    def label(run):
        return run[0] if runs_of[run[0]] == 1 else "%s #%d" % run

    out = []            # details printed before the verdict lines
    verdicts = []       # (test, verdict, note)
    npass = nfail = nskip = 0

    for run in order:
        e = info[run]
        own = [r for r in reports if r[2] == run]
        t = run[0]
        v, note = e["verdict"], ""
        if v is None:
            if e["start"] is not None:
                v, note = "FAIL", "did not finish (guest panicked or hung)"
            else:
                v, note = "FAIL", "never ran"
        elif v == "TIMEOUT":
            note = "timed out (rc=%s)" % e["rc"]
        elif v == "FAIL":
            note = "rc=%s" % e["rc"]
            if e["start"] is not None:
                bad = [l[len("not ok "):].strip() for l in lines[e["start"]:e["end"]] if l.startswith("not ok ")]
                if bad:
                    note += "; not ok: " + ", ".join(bad[:5]) + (" ..." if len(bad) > 5 else "")
        if v in ("FAIL", "TIMEOUT") and e["verdict"] in ("FAIL", "TIMEOUT") and t.split(":")[0] in known and not own:
            v, note = "XFAIL", "known TCG failure: " + (known[t.split(":")[0]] or "see configs/tcg-known-failures.txt")
        if own:
            note = (note + "; " if note and v != "PASS" else "") + "kernel report: " + own[0][1].split("]: ", 1)[-1].strip()[:100]
            v = "FAIL"
        if e["verdict"] == "PASS" and t.split(":")[0] in known and not own:
            note = "passes although listed in configs/tcg-known-failures.txt"
        if e["time"] and v in ("PASS", "SKIP", "XFAIL"):
            note = ("%ss" % e["time"]) + ("; " + note if note else "")
        verdicts.append((label(run), v, note))
        if v == "PASS":
            npass += 1
        elif v in ("SKIP", "XFAIL"):
            nskip += 1
        else:
            nfail += 1
            out.append("--- %s: %s" % (label(run), note))
            if e["start"] is not None:
                hi = (e["end"] + 1) if e["end"] is not None else len(lines)
                test_excerpt(lines, e["start"], hi, out)
            if own and (e["start"] is None or own[0][0] < e["start"]):
                excerpt(lines, own[0][0] - 2, own[0][0] + 40, 42, out)

    loose = [r for r in reports if r[2] is None or r[2] not in info]
    if loose:
        first = loose[0]
        where = "boot" if not any(info[t]["start"] is not None and info[t]["start"] < first[0] for t in info) else "outside the tests (kmemleak scan / shutdown)"
        verdicts.append(("kernel", "FAIL", "%d report line(s) during %s: %s" % (len(loose), where, first[1].strip()[:100])))
        nfail += 1
        out.append("--- kernel reports during %s:" % where)
        excerpt(lines, first[0] - 3, first[0] + 50, 53, out)

    if ended is None:
        if a.hard_timeout:
            why = "the VM hit the hard timeout of %ss (guest hung?)" % a.hard_timeout
        elif a.stall:
            why = "the stall watchdog killed the VM: %s (guest hung?)" % a.stall
        elif any(re.search(r"Kernel panic", l) for l in lines):
            why = "the guest kernel panicked"
        else:
            why = "the guest stopped before the END line (qemu rc=%d)" % a.qemu_rc
        verdicts.append(("vm", "FAIL", "no END line: " + why))
        nfail += 1
        if loose and loose[0][0] + 50 >= len(lines):
            out.append("--- vm: no END line, %s (log tail above)" % why)
        else:
            out.append("--- vm: no END line, %s; last lines of the log:" % why)
            excerpt(lines, len(lines) - 40, len(lines), 40, out)

    for l in out:
        print(l)
    print("=== verdicts (log: %s)" % a.log)
    for t, v, note in verdicts:
        print("  %-7s %s%s" % (v, t, ("  (" + note + ")") if note else ""))
    line = "%d passed, %d failed" % (npass, nfail)
    if nskip:
        line += ", %d skipped" % nskip
    print(line)
    return 1 if nfail else 0


if __name__ == "__main__":
    sys.exit(main())
