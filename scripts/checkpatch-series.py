#!/usr/bin/env python3
"""checkpatch.pl --strict on every patch of a series, with written reasons.

  scripts/checkpatch-series.py SRC REASONS PATCH...

Runs SRC/scripts/checkpatch.pl --strict on each PATCH (in SRC, the pristine
tree, so that checks against the tree see the tree the series applies to)
and prints one line per patch: PASS, or FAIL with the messages that have no
reason.  A message stays only if REASONS has a line for it:

  <glob of the patch file name> | <start of the checkpatch message> | <reason>

e.g. "*-Gate-KVM-internal-* | CHECK: Alignment should match open parenthesis |
TRACE_EVENT() layout".  One line covers every occurrence of that message in
the matching patches.  A REASONS line that matches no message fails too, so
the file cannot keep reasons for what is gone.  Exit status 1 on any FAIL.
"""
import fnmatch
import os
import re
import subprocess
import sys


def read_reasons(path):
    reasons = []
    for n, line in enumerate(open(path), 1):
        line = line.rstrip('\n')
        if not line.strip() or line.startswith('#'):
            continue
        parts = [p.strip() for p in line.split('|', 2)]
        if len(parts) != 3 or not all(parts):
            sys.exit('%s:%d: expected "<patch glob> | <message> | <reason>"' % (path, n))
        reasons.append(dict(glob=parts[0], msg=parts[1], why=parts[2], line=n, used=0))
    return reasons


def checkpatch(src, patch):
    r = subprocess.run(['perl', 'scripts/checkpatch.pl', '--strict', '--terse',
                        '--no-summary', '--showfile', patch],
                       cwd=src, capture_output=True, text=True)
    msgs = []
    for line in (r.stdout + r.stderr).splitlines():
        m = re.match(r'^(\S+?):(\d+): ((?:ERROR|WARNING|CHECK): .*)$', line)
        if m:
            msgs.append((m.group(1), int(m.group(2)), m.group(3)))
        elif line.strip():
            msgs.append(('?', 0, 'ERROR: checkpatch: ' + line.strip()))
    return msgs


def main():
    src, reasons_path = sys.argv[1:3]
    reasons = read_reasons(reasons_path) if os.path.exists(reasons_path) else []
    fail = 0
    for patch in sys.argv[3:]:
        name = os.path.basename(patch)
        msgs = checkpatch(src, os.path.abspath(patch))
        bad, kept = [], 0
        for f, n, msg in msgs:
            why = [r for r in reasons
                   if fnmatch.fnmatch(name, r['glob']) and msg.startswith(r['msg'])]
            for r in why:
                r['used'] += 1
            if why:
                kept += 1
            else:
                bad.append('  %s:%d: %s' % (f, n, msg))
        counts = {k: sum(1 for _, _, m in msgs if m.startswith(k)) for k in ('ERROR', 'WARNING', 'CHECK')}
        summary = '%d errors, %d warnings, %d checks' % (counts['ERROR'], counts['WARNING'], counts['CHECK'])
        if bad:
            fail = 1
            print('FAIL  %s  checkpatch --strict: %s, %d without a reason:' % (name, summary, len(bad)))
            print('\n'.join(bad))
        else:
            print('PASS  %s  checkpatch --strict: %s%s' %
                  (name, summary, ' (each with its reason in %s)' % os.path.basename(reasons_path)
                   if kept else ''))
    for r in reasons:
        if not r['used']:
            fail = 1
            print('FAIL  %s:%d: reason "%s | %s" matches nothing any more' %
                  (os.path.basename(reasons_path), r['line'], r['glob'], r['msg']))
    sys.exit(fail)


if __name__ == '__main__':
    main()
