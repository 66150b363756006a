#!/usr/bin/env python3
"""Mutants: each re-introduces one defect fixed in the kernel review round
(issue 8), or one found later, and names the selftest that must catch it.
For each, the mutant is written as one more patch (out/mutant-M*.patch) on
top of the series in patches/, against the file as the whole series leaves
it, and its test binary (guest_memfd_presence_ops_test unless named) runs in
the VM (make vm-test with PATCHES set
to the series plus the mutant; the next build without it reassembles the
tree).  A mutant is KILLED when its subtest fails; one that SURVIVES means a
test that cannot fail.

  scripts/mutants.py [M1 M2 ...]      (~70 s a mutant with a warm build)
"""
import difflib
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERIES = sorted(glob.glob(os.path.join(TOP, 'patches/*.patch')))
# Kernel paths of the files the mutants change.
C = 'virt/kvm/guest_memfd_presence.c'
MAIN = 'virt/kvm/kvm_main.c'


def pristine_tree():
    """The pristine source (scripts/fetch-kernel.sh, cached)."""
    out = subprocess.run(['bash', '-c', '. scripts/common.sh && resolve_paths'
                          ' >/dev/null && echo "$SRC"'], cwd=TOP, check=True,
                         capture_output=True, text=True).stdout
    return out.strip().splitlines()[-1]


def series_file(src, path):
    """The text of a kernel file as the whole series leaves it."""
    with tempfile.TemporaryDirectory() as d:
        if os.path.exists(os.path.join(src, path)):
            os.makedirs(os.path.join(d, os.path.dirname(path)))
            shutil.copy(os.path.join(src, path), os.path.join(d, path))
        for p in SERIES:
            subprocess.run(['git', 'apply', '--include=' + path, p], cwd=d,
                           check=True, capture_output=True)
        return open(os.path.join(d, path)).read()
muts=[
 ('M1 interruptible kernel waits', C, '''	if ((flags & FAULT_FLAG_INTERRUPTIBLE) &&
	    ((flags & FAULT_FLAG_USER) || !(flags & FAULT_FLAG_TRIED) ||
	     !signal_pending(current)))''', '''	if ((flags & FAULT_FLAG_INTERRUPTIBLE))''', 'kvm_access_signal_storm'),
 ('M2 COPY faults source under lock', C, '''	if (copy_from_user(bounce, src, PAGE_SIZE))
		return -EFAULT;

	filemap_invalidate_lock_shared(inode->i_mapping);
	r = gmem_install_page(inode, p, index, bounce);''', '''	filemap_invalidate_lock_shared(inode->i_mapping);
	if (copy_from_user(bounce, src, PAGE_SIZE)) {
		filemap_invalidate_unlock_shared(inode->i_mapping);
		return -EFAULT;
	}
	r = gmem_install_page(inode, p, index, bounce);''', 'copy_from_not_present_source'),
 ('M3 unbounded records', C, '''	if (test_bit(index, p->queued)) {
		set_bit(index, p->notified);
		return true;
	}''', '''	if (0) {
		set_bit(index, p->notified);
		return true;
	}''', 'records_bounded'),
 ('M4 notify fd pins inode', C, '''	kref_get(&p->ref);
	nf->p = p;''', '''	kref_get(&p->ref);
	ihold(file_inode(file));
	nf->p = p;''', 'notify_fd_outlives_gmem'),
 ('M5 masked hash', C, '''	return &p->page_wq[hash_long(index, KVM_GMEM_PRESENCE_WAITQ_BITS)];''', '''	return &p->page_wq[index & (KVM_GMEM_PRESENCE_NR_WAITQ - 1)];''', 'wait_queues_hashed'),
 ('M6 policy change wakes nobody', C, '''	kvm_gmem_presence_wake_gfns(kvm, 0, -1ULL);
	return 0;''', '''	return 0;''', 'policy_change_wakes_waiter'),
 ('M7 conversion wakes nobody', MAIN, '''	kvm_gmem_presence_wake_gfns(kvm, start, end);''', '''	(void)start;''', 'conversion_wakes_waiter'),
 ('M8 private REARM allowed', C, '''	if (!kvm_gmem_range_is_shared(inode, start, end))
		return -EPERM;''', '''	if (0)
		return -EPERM;''', 'private_rearm_destroys'),
 ('M9 VM_FAULT_OOM on no record', C, '''	if (gmem_notify_mmap(vmf, p))
		return gmem_fault_nomem(vmf);''', '''	if (gmem_notify_mmap(vmf, p))
		return VM_FAULT_OOM;''', 'record_alloc_failure_retries'),
 # Found later, by the fuzz test in CI (not part of the review round).
 ('M10 read() faults holding the record', C, '''		if (copy_to_user_nofault(buf + done, &ev, sizeof(ev))) {
			gmem_return_record(p, rec);
			if (done)
				break;
			if (fault_in_safe_writeable(buf, sizeof(ev)))
				return -EFAULT;
			continue;
		}''', '''		if (copy_to_user(buf + done, &ev, sizeof(ev))) {
			gmem_return_record(p, rec);
			return done ? done : -EFAULT;
		}''', 'notify_read_into_missing_page', 'guest_memfd_presence_fuzz_test'),
]
sel = sys.argv[1:]
survivors = 0
os.makedirs(os.path.join(TOP, 'out'), exist_ok=True)
src = pristine_tree()
texts = {}
for name, f, old, new, test, *binary in muts:
    binary = binary[0] if binary else 'guest_memfd_presence_ops_test'
    tag = name.split()[0]
    if sel and tag not in sel:
        continue
    if f not in texts:
        texts[f] = series_file(src, f)
    orig = texts[f]
    if orig.count(old) != 1:
        sys.exit(f'{tag}: the code it mutates has changed; update {__file__}')
    mutant = os.path.join(TOP, 'out', f'mutant-{tag}.patch')
    open(mutant, 'w').writelines(difflib.unified_diff(
        orig.splitlines(True), orig.replace(old, new).splitlines(True),
        'a/' + f, 'b/' + f))
    r = subprocess.run(['make', '-C', TOP, 'vm-test',
                        'TESTS=' + binary],
                       env=dict(os.environ, PATCHES=' '.join(SERIES + [mutant])),
                       capture_output=True, text=True)
    out = r.stdout + r.stderr
    log = os.path.join(TOP, 'out', f'mutant-{tag}.log')
    open(log, 'w').write(out)
    failed = set(re.findall(r'not ok \d+ global\.(\w+)', out))
    killed = test in failed
    survivors += not killed
    print(f'{"KILLED  " if killed else "SURVIVED"} {name}: {test} '
          f'{"fails" if killed else "passes"} (failing: {sorted(failed)}; {log})',
          flush=True)
sys.exit(1 if survivors else 0)
