# guest_memfd presence bitmap: build, boot and test loop.  See README.md.
#
#   make              userspace tools (userspace/)
#   make check        everything CI runs: deps, host unit tests, debug kernel,
#                     selftests, VM run of the default test set
#   make demo         in the VM: gmfp-vm snapshots a VM, restores it lazily into
#                     a confidential VM, migrates one post-copy (summaries)
#   make vm-test      kernel + selftests + initramfs + boot + run   [TESTS="a b"]
#   make shell        boot the VM to a shell (tests in /kvm; Ctrl-A X quits)
#   make kernel       [FLAVOR=debug|release]    make selftests    make deps
#   make series       the series as mails: git history on the pristine tree,
#                     git format-patch --cover-letter into out/series/, then
#                     git am of them checked against the assembled tree
#   make check-series make series, then every prefix of it builds (own tree),
#                     x86_64 bzImage and the KVM core for arm64, i386, s390, riscv,
#                     and every patch passes checkpatch --strict
#   make htmldocs     Sphinx of Documentation/virt/kvm/ (the series applied);
#                     fails on a warning from a file the series touches
#   make cross-build  the KVM core (arch/<arch>/kvm/ + virt/kvm/) with W=1 for
#                     arm64, i386, s390, riscv [CROSS_ARCHES="arm64"]
#   make bench        the benchmark matrix (bench/matrix) in one boot of the
#                     release kernel: demand paging, helper process, async #PF,
#                     libgmfp; table, out/bench/results.json, PNG plots
#   make bench-lib    libgmfp's engine vs the simplest serving loop, in the VM
#                     (release kernel, tsc=reliable); prints a table
#   make mutants      re-introduce each review-round defect; its selftest must
#                     fail (scripts/mutants.py, ~70 s a mutant)
#   make stress       long runs of the stress and fuzz selftests and of the
#                     userspace soak, debug kernel [DURATION=600 FUZZ_CALLS=150000 SEED=]
#   make qemu         our QEMU (qemu/README.md): Debian's source + qemu/patches/,
#                     KVM-only x86_64 build with ccache, in the cache
#   make qemu-smoke   memory-backend-guest-memfd on this machine's /dev/kvm
#   make check-qemu   make qemu, then the in-VM QEMU tests (qemu/tests/vm/):
#                     presence=on boot, post-copy into guest_memfd vs uffd,
#                     with preempt and with a pause + recovery [QEMU_TESTS=]
#   make clean        out/ and userspace build   make distclean   + cached trees/builds
#
# Variables (command line or environment): FLAVOR (debug), TESTS, APPEND,
# KST_TIMEOUT (per test, 300 s), TIMEOUT (whole VM, 1800 s), VERBOSE=1|2,
# XDG_CACHE_HOME / CACHE (cache root, default ~/.cache/gmem-presence).

# `make vm-test SHELL=1` would otherwise make "1" the recipe shell.
ifeq ($(SHELL),1)
override SHELL := /bin/sh
INTERACTIVE := 1
endif

FLAVOR ?= debug
export FLAVOR
S := scripts

.PHONY: all userspace deps kernel selftests initramfs vm-test check check-upstream series check-series htmldocs cross-build mutants stress demo shell clean distclean bench bench-lib qemu qemu-smoke check-qemu

all: userspace

userspace:
ifneq ($(wildcard userspace/Makefile),)
	$(MAKE) -C userspace
else
	@echo "userspace/: nothing to build yet"
endif

deps:
	@$(S)/deps.sh

kernel: deps
	@$(S)/kernel.sh

selftests: kernel
	@$(S)/build-selftests.sh

initramfs:
	@$(S)/mk-initramfs.sh

# vm-test builds the kernel and the selftests itself, under one hold of the lock.
vm-test: deps
ifeq ($(INTERACTIVE),1)
	@MODE=shell $(S)/vm-test.sh
else
	@$(S)/vm-test.sh
endif

check:
	@$(S)/check.sh

# The upstream selftests left out of make check for time (scripts/common.sh).
check-upstream: deps
	@bash -c '. $(S)/common.sh && TESTS="$$SLOW_UPSTREAM_TESTS" exec $(S)/vm-test.sh'

# The series as a reviewer gets it (out/series/), and proof that it is the
# tree we build: git am of the mails onto the pristine tree == assemble.sh's.
series:
	@$(S)/series.sh mail
	@$(S)/series.sh verify

# Every prefix of the exported series builds, without compiler warnings, and
# every patch passes checkpatch --strict (scripts/check-series.sh).
check-series: deps series
	@$(S)/check-series.sh

# The KVM documentation of the assembled tree through Sphinx.
htmldocs: deps
	@$(S)/htmldocs.sh

# The KVM core of the assembled tree builds for arm64 (no async #PF), i386 and
# s390 (no guest_memfd) with the cross compilers, W=1, without KVM warnings.
cross-build: deps
	@ASSEMBLE=1 $(S)/cross-build.sh

# Each mutant re-introduces a defect the review round fixed; its test must fail.
mutants: deps
	@$(S)/mutants.py

# Long runs: guest_memfd_presence_stress_test and userspace/soak_vm_test for
# DURATION seconds, guest_memfd_presence_fuzz_test for FUZZ_CALLS calls, then
# the userspace libFuzzer targets USERFUZZ_SECS each (scripts/stress.sh).
stress: deps
	@$(S)/stress.sh

# Benchmarks print figures; they are not pass/fail tests.  Release kernel,
# fine guest clock (the TSC; the VM otherwise falls back to jiffies).
# bench: the whole matrix of bench/matrix in one boot, then bench/report.py
# (out/bench/results.json, a table, PNG plots); see docs/benchmarks.md.
bench: deps
	@$(S)/bench.sh
bench-lib: deps
	@FLAVOR=release TESTS=userspace/bench_lib APPEND="tsc=reliable $(APPEND)" \
		VERBOSE=1 KST_TIMEOUT=$${KST_TIMEOUT:-900} $(S)/vm-test.sh

# The reference VMM end to end (userspace/tests/vm/demo.sh): snapshot, lazy
# restore into a KVM_X86_SW_PROTECTED_VM, postcopy migration on loopback.
# tsc=reliable: a fine guest clock for the figures (else jiffies, 4 ms).
demo: deps
	@echo "demo: gmfp-vm in the test VM: snapshot, lazy restore into a confidential VM,"
	@echo "demo: post-copy migration between two VMM processes (userspace/tests/vm/demo.sh)"
	@MODE=demo TESTS=userspace/demo APPEND="tsc=reliable $(APPEND)" \
		KST_TIMEOUT=$${KST_TIMEOUT:-900} $(S)/vm-test.sh

# Our QEMU (qemu/): Debian's 10.2 source + qemu/patches/, KVM-only x86_64, ccache.
qemu: deps
	@qemu/build.sh

# memory-backend-guest-memfd on this machine's /dev/kvm (qemu/tests/smoke.py).
qemu-smoke: deps
	@qemu/smoke.sh

# The in-VM QEMU tests (qemu/README.md) on the presence kernel, our QEMU built
# first (cached) outside the VM lock.  A test qemu/NAME:A:B runs
# qemu/tests/vm/NAME.sh with the arguments A B.
QEMU_TESTS ?= qemu/presence_boot qemu/postcopy:gmem:uffd \
	qemu/postcopy:gmem-preempt:gmem-recover
check-qemu: qemu
	@TESTS="$(QEMU_TESTS)" KST_TIMEOUT=$${KST_TIMEOUT:-900} $(S)/vm-test.sh

shell: deps
	@MODE=shell $(S)/vm-test.sh

clean:
	rm -rf out
ifneq ($(wildcard userspace/Makefile),)
	-$(MAKE) -C userspace clean
endif

# Also the assembled trees, kernel builds and selftest builds in the cache
# (keeps the downloaded source package, the extracted pristine tree and ccache).
CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/gmem-presence
distclean: clean
	rm -rf $(CACHE)/tree-* $(CACHE)/build $(CACHE)/kselftest-* $(CACHE)/qemu-tree-* $(CACHE)/qemu-build-*
