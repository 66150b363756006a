#!/usr/bin/env python3
"""Smoke test of memory-backend-guest-memfd with our QEMU, on real KVM.

The guest is QEMU's own migration-test boot sector
(tests/qtest/migration/i386/a-b-bootblock.h): it increments the first byte
of every page in [1 MiB, 100 MiB) over and over and prints 'B' on the serial
port after each pass.  Every page check below is the one migration-test
does (check_guests_ram): with the guest stopped, every page's byte equals
the one before it, except for one step of -1 where the incrementer is.

  boot       a VM whose RAM is memory-backend-guest-memfd boots, runs, its RAM
             is the guest_memfd mapping ([kvm-gmem] in /proc/PID/maps), its
             memslots are bound to the guest_memfd (KVM_MEM_GUEST_MEMFD, from
             -trace kvm_set_user_memory), all pages check
  migrate    precopy from memory-backend-memfd into memory-backend-guest-memfd
             (the destination writes its RAM through the mapping); the
             destination runs on, all pages check
  blocker    migrating away from guest_memfd RAM fails with the blocker (KVM
             cannot dirty-log guest_memfd memslots)
  presence   presence=on: where KVM reports GUEST_MEMFD_FLAG_PRESENCE the VM
             boots and all pages check (all pages were marked present);
             elsewhere creating the backend fails with KVM's error

Usage: QEMU_TREE=<qemu source> smoke.py QEMU [TEST...]   (needs /dev/kvm;
prints one line per test, then "N passed, N failed"; exit status 1 on any
failure).  `qemu/smoke.sh` sets it up.
"""
import fcntl
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
START, END, PAGE = 0x100000, 0x6400000, 4096
MEM = "150M"


def kvm_guest_memfd_flags():
    """KVM_CAP_GUEST_MEMFD_FLAGS of a new default VM, or 0."""
    kvm_create_vm = 0xAE01
    kvm_check_extension = 0xAE03
    fd = os.open("/dev/kvm", os.O_RDWR)
    try:
        vm = fcntl.ioctl(fd, kvm_create_vm, 0)
        try:
            return max(fcntl.ioctl(vm, kvm_check_extension, 244), 0)
        finally:
            os.close(vm)
    finally:
        os.close(fd)


def bootsect(src_tree, path):
    hdr = open(os.path.join(src_tree, "tests/qtest/migration/i386/a-b-bootblock.h")).read()
    body = re.search(r"x86_bootsect\[\]\s*=\s*\{(.*?)\};", hdr, re.S).group(1)
    data = bytes(int(x, 16) for x in re.findall(r"0x[0-9a-fA-F]+", body))
    assert len(data) == 512, len(data)
    open(path, "wb").write(data)


class QMP:
    def __init__(self, path, alive, timeout=30):
        t0 = time.time()
        while True:
            try:
                self.s = socket.socket(socket.AF_UNIX)
                self.s.connect(path)
                break
            except OSError:
                self.s.close()
                if not alive() or time.time() - t0 > timeout:
                    raise
                time.sleep(0.1)
        self.f = self.s.makefile("rw")
        json.loads(self.f.readline())        # greeting
        self.cmd("qmp_capabilities")

    def cmd(self, name, **args):
        self.f.write(json.dumps({"execute": name, "arguments": args}) + "\n")
        self.f.flush()
        while True:
            r = json.loads(self.f.readline())
            if "event" in r:
                continue
            return r

    def ok(self, name, **args):
        r = self.cmd(name, **args)
        if "error" in r:
            raise RuntimeError(f"{name}: {r['error']['desc']}")
        return r["return"]


class VM:
    def __init__(self, qemu, d, name, backend, extra=()):
        self.d, self.name = d, name
        self.serial = os.path.join(d, name + ".serial")
        self.qmp_path = os.path.join(d, name + ".qmp")
        self.log = open(os.path.join(d, name + ".log"), "w")
        # Firmware: run from the build tree, QEMU looks in its qemu-bundle/,
        # which has none (no blobs in Debian's tarball): Debian's seabios.
        cmd = [qemu, "-accel", "kvm", "-nodefaults", "-display", "none",
               "-L", "/usr/share/seabios", "-L", "/usr/share/qemu",
               "-machine", "q35,smm=off,memory-backend=mem",
               "-object", backend + ",id=mem,size=" + MEM,
               "-drive", "if=none,id=d0,file=%s,format=raw" % os.path.join(d, "bootsect"),
               "-device", "ide-hd,drive=d0,secs=1,cyls=1,heads=1",
               "-serial", "file:" + self.serial,
               "-qmp", "unix:%s,server=on,wait=off" % self.qmp_path] + list(extra)
        self.p = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        self.qmp = None

    def connect(self):
        t0 = time.time()
        while not os.path.exists(self.qmp_path):
            if self.p.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.p.returncode}: {self.output()}")
            if time.time() - t0 > 30:
                raise RuntimeError(f"{self.name}: no QMP socket")
            time.sleep(0.05)
        try:
            self.qmp = QMP(self.qmp_path, lambda: self.p.poll() is None)
        except OSError as e:
            self.p.poll()
            raise RuntimeError(f"{self.name}: QMP: {e} (exit {self.p.returncode}): {self.output()}")
        return self

    def output(self):
        self.log.flush()
        return open(self.log.name).read().strip()

    def bs(self):
        try:
            return open(self.serial, "rb").read().count(b"B")
        except FileNotFoundError:
            return 0

    def wait_bs(self, n, timeout=60):
        """Wait for n more passes of the guest over its memory."""
        base, t0 = self.bs(), time.time()
        while self.bs() < base + n:
            if self.p.poll() is not None or time.time() - t0 > timeout:
                raise RuntimeError(f"{self.name}: guest made no progress "
                                   f"({self.bs() - base} of {n} passes): {self.output()}")
            time.sleep(0.05)

    def check_ram(self):
        """migration-test's check_guests_ram on a pmemsave of the range."""
        self.qmp.ok("stop")
        dump = os.path.join(self.d, self.name + ".ram")
        self.qmp.ok("pmemsave", val=START, size=END - START, filename=dump)
        ram = open(dump, "rb").read()
        os.unlink(dump)
        first = last = ram[0]
        edge, bad = False, 0
        for off in range(PAGE, END - START, PAGE):
            b = ram[off]
            if b != last:
                if (b + 1) % 256 == last and not edge:
                    edge, last = True, b
                else:
                    bad += 1
        if bad:
            raise RuntimeError(f"{self.name}: {bad} pages inconsistent (first byte {first:#x})")
        if first == 0:
            raise RuntimeError(f"{self.name}: RAM never written by the guest")
        return first

    def gmem_mapped(self):
        """Bytes of this process's mappings of a guest_memfd."""
        total = 0
        for line in open(f"/proc/{self.p.pid}/maps"):
            if "kvm-gmem" in line:
                a, b = line.split()[0].split("-")
                total += int(b, 16) - int(a, 16)
        return total

    def stop(self):
        if self.p.poll() is None:
            try:
                if self.qmp:
                    self.qmp.cmd("quit")
                self.p.wait(10)
            except Exception:
                self.p.kill()
                self.p.wait()
        self.log.close()


def gmem_memslots(log):
    """From -trace kvm_set_user_memory: (bytes of RAM in memslots bound to a
    guest_memfd with KVM_MEM_GUEST_MEMFD, failed calls)."""
    bound, failed = 0, 0
    for m in re.finditer(r"kvm_set_user_memory .* flags=(0x[0-9a-f]+) .*size=(0x[0-9a-f]+) "
                         r".*guest_memfd=(-?\d+) .*ret=(-?\d+)", log):
        flags, size, gmem, ret = int(m[1], 16), int(m[2], 16), int(m[3]), int(m[4])
        if ret < 0:
            failed += 1
        elif gmem >= 0 and flags & 4:
            bound = max(bound, size)
    return bound, failed


def t_boot(qemu, d):
    vm = VM(qemu, d, "boot", "memory-backend-guest-memfd",
            ["-trace", "kvm_set_user_memory"]).connect()
    try:
        vm.wait_bs(3)
        mapped = vm.gmem_mapped()
        if mapped != 150 << 20:
            raise RuntimeError(f"guest_memfd mapped: {mapped} bytes, want {150 << 20}")
        bound, failed = gmem_memslots(vm.output())
        if failed or bound < 100 << 20:
            raise RuntimeError(f"memslots: largest guest_memfd-bound {bound:#x}, {failed} failed")
        v = vm.check_ram()
        return (f"3 passes, RAM mapped from [kvm-gmem] ({mapped >> 20} MiB), memslots with "
                f"KVM_MEM_GUEST_MEMFD (largest {bound >> 20} MiB), all pages consistent (byte {v:#x})")
    finally:
        vm.stop()


def migrate(src, dst_uri, timeout=120):
    src.qmp.ok("migrate", uri=dst_uri)
    t0 = time.time()
    while True:
        st = src.qmp.ok("query-migrate")
        if st.get("status") == "completed":
            return st
        if st.get("status") in ("failed", "cancelled"):
            raise RuntimeError(f"migration {st.get('status')}: {st.get('error-desc', '')}")
        if time.time() - t0 > timeout:
            raise RuntimeError(f"migration not done after {timeout} s: {st}")
        time.sleep(0.1)


def t_migrate(qemu, d):
    sock = os.path.join(d, "mig.sock")
    src = VM(qemu, d, "src", "memory-backend-memfd,share=on").connect()
    dst = VM(qemu, d, "dst", "memory-backend-guest-memfd", ["-incoming", "unix:" + sock]).connect()
    try:
        src.wait_bs(2)
        st = migrate(src, "unix:" + sock)
        t0 = time.time()
        while dst.qmp.ok("query-status")["status"] != "running":
            if time.time() - t0 > 30:
                raise RuntimeError("destination not running after migration")
            time.sleep(0.05)
        dst.wait_bs(3)
        v = dst.check_ram()
        ram = st.get("ram", {})
        return (f"precopy memfd -> guest_memfd in {st.get('total-time')} ms "
                f"(downtime {st.get('downtime')} ms, {ram.get('transferred', 0) >> 20} MiB); "
                f"destination ran 3 passes, all pages consistent (byte {v:#x})")
    finally:
        src.stop()
        dst.stop()


def t_blocker(qemu, d):
    vm = VM(qemu, d, "blk", "memory-backend-guest-memfd").connect()
    try:
        vm.wait_bs(1)
        r = vm.qmp.cmd("migrate", uri="unix:" + os.path.join(d, "nowhere.sock"))
        if "error" not in r or "guest_memfd" not in r["error"]["desc"]:
            raise RuntimeError(f"migrate from guest_memfd RAM was not blocked: {r}")
        vm.wait_bs(1)
        return "refused: " + r["error"]["desc"]
    finally:
        vm.stop()


def t_presence(qemu, d):
    flags = kvm_guest_memfd_flags()
    vm = VM(qemu, d, "pres", "memory-backend-guest-memfd,presence=on")
    try:
        if not flags & 4:
            rc = vm.p.wait(30)
            out = vm.output()
            if rc == 0 or "flags 0x4" not in out:
                raise RuntimeError(f"KVM lacks presence (flags {flags:#x}) but QEMU said rc={rc}: {out}")
            return f"KVM reports guest_memfd flags {flags:#x} (no PRESENCE): refused: {out.splitlines()[-1]}"
        vm.connect()
        vm.wait_bs(3)
        v = vm.check_ram()
        return f"KVM flags {flags:#x}: booted with every page marked present, 3 passes, all pages consistent (byte {v:#x})"
    finally:
        vm.stop()


TESTS = {"boot": t_boot, "migrate": t_migrate, "blocker": t_blocker, "presence": t_presence}


def main():
    qemu = sys.argv[1]
    names = sys.argv[2:] or list(TESTS)
    passed = failed = 0
    with tempfile.TemporaryDirectory(prefix="qemu-smoke-") as d:
        bootsect(os.environ["QEMU_TREE"], os.path.join(d, "bootsect"))
        for n in names:
            t0 = time.time()
            try:
                msg = TESTS[n](qemu, d)
                print(f"PASS {n} ({time.time() - t0:.1f} s): {msg}", flush=True)
                passed += 1
            except Exception as e:
                print(f"FAIL {n} ({time.time() - t0:.1f} s): {e}", flush=True)
                failed += 1
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
