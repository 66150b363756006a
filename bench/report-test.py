#!/usr/bin/env python3
"""Self-test of bench/report.py on made-up boot logs.

Each case: the logs of one `make bench` (one per boot), and what report.py
must conclude: its exit status and lines its output must hold.  Run by
`make check` (scripts/check.sh) with the host tests.
"""
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))

MATRIX = """\
rep  demand_paging  presence-exit  2  demand_paging_test:-p:exit:-v:2:-b:16M
rep  demand_paging  uffd-missing   2  demand_paging_test:-u:MISSING:-v:2:-b:16M
once helper         -              -  userspace/bench_helper:-n:8192:-r:3
"""

UP = "=== KST: userspace up at 1.5 s, kernel 7.3.4-release, 2 cpus, MemTotal: 2000000 kB"


def dpt(mode, pps, entry):
    args = entry.split(":", 1)[1].replace(":", " ")
    return ["=== KST: START %s %s" % (entry, args),
            'BENCH {"bench":"demand_paging","mode":"%s","vcpus":2,"pages_per_s":%d}' % (mode, pps),
            "=== KST: RESULT %s PASS rc=0 time=2.0s" % entry]


PE = "demand_paging_test:-p:exit:-v:2:-b:16M"
UM = "demand_paging_test:-u:MISSING:-v:2:-b:16M"
HE = "userspace/bench_helper:-n:8192:-r:3"
HELPER = ["=== KST: START %s -n 8192 -r 3" % HE,
          'BENCH {"bench":"helper","mode":"presence","threads":1,"pages_per_s":9000,'
          '"pages_per_s_min":8000,"pages_per_s_max":9500,"lat_p50_us":10,"lat_p99_us":20,'
          '"lat_max_us":30,"notify_p50_us":1,"install_p50_us":2,"resume_p50_us":3}',
          "=== KST: RESULT %s PASS rc=0 time=50.0s" % HE]
END = ["=== KST: END pass=3 fail=0 skip=0 uptime=60s"]


def oops(func):
    return ["[   40.1] BUG: kernel NULL pointer dereference, address: 0000000000000000",
            "[   40.1] Oops: 0000 [#1] SMP",
            "[   40.1] RIP: 0010:%s+0x1c/0x40" % func,
            "[   40.1] Call Trace:",
            "[   40.1]  <TASK>",
            "[   40.1]  do_syscall_64+0x30/0x80",
            "[   40.2] Kernel panic - not syncing: Fatal exception"]


# The guest died in boot 1 during the uffd run (an oops on upstream code),
# and the BENCH line before it names a presence mode: not the series' code.
# Boot 2 ran the interrupted run again and the rest.
CASES = [
    ("a boot lost to an oops outside the series",
     [[UP] + dpt("presence-exit", 5000, PE) + ["=== KST: START %s -u MISSING -v 2 -b 16M" % UM]
      + oops("rb_insert_color"),
      [UP] + dpt("uffd-missing", 2500, UM) + dpt("presence-exit", 5200, PE) + dpt("uffd-missing", 2600, UM)
      + HELPER + END],
     0, ["2 boots; boot 1: a kernel report outside the series' code, during " + UM,
         "uffd-missing at 2 vCPUs (the guest died, boot 1)", "| presence-exit | 2 | 5000 | 5000–5200 |"],
     lambda doc: len(doc["lost"]) == 1 and len(doc["meta"]["lost_boots"]) == 1 and doc["demand_paging"][0]["runs"] == 2
     and doc["demand_paging"][1]["runs"] == 2 and len(doc["helper"]) == 1),
    # An oops in the series' code fails the bench.
    ("an oops in the series' code",
     [[UP] + dpt("presence-exit", 5000, PE) + ["=== KST: START %s -u MISSING -v 2 -b 16M" % UM]
      + oops("gmem_notify_read"),
      [UP] + dpt("uffd-missing", 2500, UM) + HELPER + END],
     1, ["bench: FAILED: kernel report naming the series' code (boot 1)"], None),
    # A report that /init repeats in its kmsg lines counts once; a WARNING
    # in the series' code found only there still fails.
    ("a warning in the series' code, in the kmsg lines",
     [[UP] + dpt("presence-exit", 5000, PE)[:2]
      + ["=== KST kmsg[%s]: [   3.0] WARNING: CPU: 1 PID: 9 at virt/kvm/guest_memfd_presence.c:1 "
         "gmem_wake_range+0x1/0x2" % PE]
      + dpt("presence-exit", 5000, PE)[2:] + dpt("uffd-missing", 2500, UM) + HELPER + END],
     1, ["bench: FAILED: kernel report naming the series' code (boot 1): [   3.0] WARNING"], None),
    # One boot, everything ran: no boot line, exit 0.
    ("one clean boot",
     [[UP] + dpt("presence-exit", 5000, PE) + dpt("uffd-missing", 2500, UM) + HELPER + END],
     0, ["| presence-exit | 2 | 5000 |", "| uffd-missing | 2 | 2500 |"],
     lambda doc: not doc["lost"] and not doc["meta"]["lost_boots"] and
     [r["x_uffd_missing"] for r in doc["demand_paging"] if r["mode"] == "presence-exit"] == [2.0]),
    # The helper run that the guest died in and that never ran again is missing figures: no
    # figures from it at all fails the bench.
    ("the helper never produced figures",
     [[UP] + dpt("presence-exit", 5000, PE) + dpt("uffd-missing", 2500, UM)
      + ["=== KST: START %s -n 8192 -r 3" % HE, "=== KST: RESULT %s FAIL rc=1 time=3.0s" % HE] + END],
     1, ["bench: FAILED: userspace/bench_helper:-n:8192:-r:3: FAIL rc=1, no figures"], None),
]


def main():
    bad = 0
    with tempfile.TemporaryDirectory() as d:
        matrix = os.path.join(d, "matrix")
        with open(matrix, "w") as f:
            f.write(MATRIX)
        for what, logs, want_rc, want_lines, check in CASES:
            args = [sys.executable, os.path.join(HERE, "report.py"), "--matrix", matrix,
                    "--reps", "2", "--out", os.path.join(d, "out"), "--no-plots"]
            for i, log in enumerate(logs):
                path = os.path.join(d, "boot%d.log" % i)
                with open(path, "w") as f:
                    f.write("\n".join(log) + "\n")
                args += ["--log", path]
            p = subprocess.run(args, capture_output=True, text=True)
            out = p.stdout + p.stderr
            ok = p.returncode == want_rc and all(w in out for w in want_lines)
            if ok and check:
                with open(os.path.join(d, "out", "results.json")) as f:
                    ok = check(json.load(f))
            print("%s: %s" % ("ok" if ok else "FAIL", what))
            if not ok:
                bad += 1
                print("    exit %d, want %d; want lines %s" % (p.returncode, want_rc, want_lines))
                print("\n".join("    " + l for l in out.split("\n")))
    print("report-test: %d of %d cases failed" % (bad, len(CASES)) if bad else
          "report-test: all %d cases passed" % len(CASES))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
