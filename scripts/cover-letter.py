#!/usr/bin/env python3
"""Fill in the cover letter that `git format-patch --cover-letter` wrote.

  scripts/cover-letter.py COVER TEMPLATE SERIES_DIR

COVER is out/series/0000-cover-letter.patch: its "*** SUBJECT HERE ***" and
"*** BLURB HERE ***" are replaced with TEMPLATE (patches/cover-letter.txt:
the first line is the subject, the rest the body).  The template's
placeholders are computed, so that the letter cannot drift from the series
or from the measurements:

  @BASE@      the kernel source the series applies to (BASE, from make series)
  @TESTS@     the selftests the series adds, with their subtest counts,
              counted in the patches of SERIES_DIR
  @BENCH@     the benchmark figures: out/bench/results.json (make bench) if
              it exists, else the tables of docs/benchmarks.md
"""
import glob
import json
import os
import re
import sys

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ratio(x):
    return '-' if x is None else '%.2fx' % x


def tests_block(series_dir):
    """One line per test program the series adds, with its TEST() count."""
    lines = []
    for p in sorted(glob.glob(os.path.join(series_dir, '[0-9]*.patch'))):
        if p.endswith('0000-cover-letter.patch'):
            continue
        k = int(os.path.basename(p).split('-')[0])
        # The diff of each file: its header, then its hunks.
        for block in open(p, errors='replace').read().split('\ndiff --git ')[1:]:
            m = re.match(r'a/(tools/testing/selftests/kvm/(\S+_test)\.c) ', block)
            if not m or '\nnew file mode' not in block.split('\n+++ ')[0]:
                continue
            n = len(re.findall(r'^\+TEST(?:_F)?\(', block, re.M))
            lines.append('  %-38s %2d subtests (patch %d)' % (m.group(2), n, k))
    return '\n'.join(lines)


def from_results(path):
    doc = json.load(open(path))
    meta = doc.get('meta', {})
    src = 'out/bench/results.json (make bench of %s at commit %s%s)' % (
        meta.get('date', '?'), meta.get('commit', '?'), '+dirty' if meta.get('dirty') else '')
    dpt = [(r['mode'], int(r['vcpus']), r['pages_per_s'], r.get('x_uffd_missing'),
            r.get('x_no_fault')) for r in doc.get('demand_paging', [])]
    helper = [(r['mode'], int(r['threads']), r['pages_per_s'], r.get('x_uffd_missing'))
              for r in doc.get('helper', [])]
    apf = [(r['policy'], r['progress_pct']) for r in doc.get('apf_progress', [])]
    return src, dpt, helper, apf


def md_tables(text):
    """Every markdown table of TEXT as (header, rows), rows as lists of cells."""
    tables, cur = [], None
    for line in text.splitlines():
        if line.startswith('|'):
            cells = [c.strip() for c in line.strip().strip('|').split('|')]
            if cur is None:
                cur = (cells, [])
                tables.append(cur)
            elif not set(''.join(cells)) <= set('-: '):
                cur[1].append(cells)
        else:
            cur = None
    return tables


def num(s):
    s = s.replace('**', '').strip()
    try:
        return float(s)
    except ValueError:
        return None


def from_doc(path):
    text = open(path).read()
    # The newest run comes first, under "### Latest run: ... (DATE, commit
    # SHA)", and ends at the next heading of its level.
    m = re.search(r'^### Latest run:.*\((\d{4}-\d\d-\d\d), commit (\w+)\)$', text, re.M)
    if not m:
        sys.exit('cover-letter: %s has no "### Latest run: ... (DATE, commit SHA)" '
                 'section and out/bench/results.json does not exist: run make bench' % path)
    res = text[m.start():]
    end = re.search(r'^### ', res[4:], re.M)
    res = res[:end.start() + 4] if end else res
    src = 'docs/benchmarks.md (run of %s, commit %s)' % (m.group(1), m.group(2))
    dpt, helper, apf = [], [], []
    for head, rows in md_tables(res):
        h = [c.lower() for c in head]
        if h[:2] == ['mode', 'vcpus'] and not dpt:
            ix, inf = h.index('× uffd-missing'), h.index('× no-fault')
            dpt = [(r[0], int(r[1]), num(r[2]), num(r[ix]), num(r[inf])) for r in rows]
        elif h[:2] == ['mode', 'threads'] and not helper:
            ix = h.index('× uffd-missing')
            helper = [(r[0], int(r[1]), num(r[2]), num(r[ix])) for r in rows]
        elif h and h[0] == 'policy' and not apf:
            apf = [(r[0], num(r[1])) for r in rows]
    return src, dpt, helper, apf


def bench_block():
    results = os.path.join(TOP, 'out/bench/results.json')
    if os.path.exists(results):
        src, dpt, helper, apf = from_results(results)
    else:
        src, dpt, helper, apf = from_doc(os.path.join(TOP, 'docs/benchmarks.md'))
    out = ['Figures from %s.' % src]
    if dpt:
        out += ['', 'demand_paging_test, vCPUs faulting, one reader thread per vCPU',
                '(pages/s, and the ratio to userfaultfd MISSING at the same vCPU count):', '']
        for mode, n, pps, xu, xn in dpt:
            out.append('  %-14s %d vCPU%s %6.0f pages/s  %5s uffd-missing  %5s no-fault' %
                       (mode, n, ' ' if n == 1 else 's', pps or 0, ratio(xu), ratio(xn)))
    if helper:
        out += ['', 'A helper process faulting through its own mapping, one handler thread:', '']
        for mode, n, pps, xu in helper:
            if mode == 'presence-engine':
                continue        # the userspace library, not this series
            out.append('  %-14s %d thread%s %6.0f pages/s  %5s uffd-missing' %
                       (mode, n, ' ' if n == 1 else 's', pps or 0, ratio(xu)))
    if apf:
        out += ['', 'Async #PF: progress of a second guest task while the first waits',
                'for a missing page, in % of its progress alone:', '']
        for pol, pct in apf:
            out.append('  %-24s %5.1f %%' % (pol, pct or 0))
    return '\n'.join(out)


def main():
    cover, template, series_dir = sys.argv[1:4]
    t = open(template).read()
    subject, body = t.split('\n', 1)
    body = body.lstrip('\n').rstrip('\n')
    body = body.replace('@BASE@', os.environ.get('BASE', 'the pristine tree'))
    body = body.replace('@TESTS@', tests_block(series_dir))
    body = body.replace('@BENCH@', bench_block())
    c = open(cover).read()
    if '*** SUBJECT HERE ***' not in c or '*** BLURB HERE ***' not in c:
        sys.exit('%s: not a cover letter template from git format-patch' % cover)
    c = c.replace('*** SUBJECT HERE ***', subject.strip())
    c = c.replace('*** BLURB HERE ***', body)
    open(cover, 'w').write(c)


if __name__ == '__main__':
    main()
