#!/usr/bin/env python3
"""Self-test of scripts/vm-verdict.py on made-up guest logs.

Each case is a log, the TESTS list and the closing line the verdict must
print.  Run by `make check` (scripts/check.sh) with the host tests.
"""
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
KNOWN = "x/known_test   # listed as a TCG failure\n"


CASES = [
    # A repeated entry is judged once per run: its second run timed out.
    ("repeated entry, one run times out",
     ["=== KST: START a:-v:4 -v 4", "=== KST: RESULT a:-v:4 PASS rc=0 time=1.0s",
      "=== KST: START a:-v:4 -v 4", "=== KST: RESULT a:-v:4 TIMEOUT rc=124 time=60.0s",
      "=== KST: END pass=1 fail=1 skip=0 uptime=62s"],
     "a:-v:4 a:-v:4", "1 passed, 1 failed", "TIMEOUT a:-v:4 #2"),
    # A kernel report during the second run fails that run only.
    ("report during run 2",
     ["=== KST: START b", "=== KST: RESULT b PASS rc=0 time=1.0s",
      "=== KST: START b", "[   3.0] WARNING: CPU: 1 PID: 9 at virt/kvm/x.c:1 f+0x1",
      "=== KST: RESULT b PASS rc=0 time=1.0s", "=== KST: START c",
      "=== KST: RESULT c PASS rc=0 time=1.0s", "=== KST: END pass=3 fail=0 skip=0 uptime=5s"],
     "b b c", "2 passed, 1 failed", "FAIL    b #2"),
    # A listed run that never started is a failure, and so is a missing END.
    ("run never started, no END",
     ["=== KST: START d", "=== KST: RESULT d PASS rc=0 time=1.0s"],
     "d d", "1 passed, 2 failed", "FAIL    d #2  (never ran)"),
    # A known TCG failure is skipped, each time it fails.
    ("known failure",
     ["=== KST: START x/known_test", "=== KST: RESULT x/known_test FAIL rc=1 time=1.0s",
      "=== KST: START x/known_test", "=== KST: RESULT x/known_test FAIL rc=1 time=1.0s",
      "=== KST: END pass=0 fail=2 skip=0 uptime=3s"],
     "x/known_test x/known_test", "0 passed, 0 failed, 2 skipped", "XFAIL   x/known_test #1"),
    # One run of a test keeps its plain name.
    ("single run",
     ["=== KST: START e", "=== KST: RESULT e PASS rc=0 time=1.0s",
      "=== KST: END pass=1 fail=0 skip=0 uptime=2s"],
     "e", "1 passed, 0 failed", "PASS    e  (1.0s)"),
]


def main():
    bad = 0
    with tempfile.TemporaryDirectory() as d:
        known = os.path.join(d, "known.txt")
        with open(known, "w") as f:
            f.write(KNOWN)
        for what, log, tests, want, line in CASES:
            path = os.path.join(d, "vm.log")
            with open(path, "w") as f:
                f.write("\n".join(log) + "\n")
            p = subprocess.run([sys.executable, os.path.join(HERE, "vm-verdict.py"), "--log", path,
                                "--tests", tests, "--known", known, "--qemu-rc", "0",
                                "--hard-timeout", ""], capture_output=True, text=True)
            out = p.stdout.strip().split("\n")
            ok = out[-1] == want and any(l.strip().startswith(line) for l in out) and \
                (p.returncode == 0) == want.startswith("%s passed, 0 failed" % want.split()[0])
            print("%s: %s" % ("ok" if ok else "FAIL", what))
            if not ok:
                bad += 1
                print("\n".join("    " + l for l in out))
    print("vm-verdict-test: %d of %d cases failed" % (bad, len(CASES)) if bad else
          "vm-verdict-test: all %d cases passed" % len(CASES))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
