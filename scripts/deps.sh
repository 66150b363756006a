#!/bin/bash
# Install the build/test dependencies from Debian (idempotent).  Nothing else is
# needed on a fresh bookworm machine.  The cross compilers are for
# scripts/cross-build.sh (KVM core for arm64, i386, s390 and riscv); clang and its
# runtime libraries (libFuzzer, the sanitizers: libclang-rt-dev, only a
# Recommends of clang) for the fuzz targets in userspace/tests/fuzz/;
# gnuplot-nox draws the benchmark plots (bench/report.py); python3-sphinx
# (with python3-yaml, which the kernel's Sphinx extensions import) builds the
# KVM documentation (make htmldocs); libglib2.0-dev, python3-venv, ninja-build
# and seabios are for our QEMU (qemu/build.sh; meson and pycotap come from sid
# through qemu/fetch.sh); libvirt-daemon, libvirt-daemon-driver-qemu and
# libvirt-clients (libvirtd, virsh) go into the test VM for qemu/libvirt
# (qemu/libvirt/initramfs.sh).
set -euo pipefail
PKGS="build-essential flex bison bc libelf-dev libssl-dev cpio ccache busybox-static
 qemu-system-x86 dwarves pkg-config xz-utils zstd file liburcu-dev libcmocka-dev
 kmod rsync perl python3 strace mandoc man-db groff-base gnuplot-nox
 gcc-aarch64-linux-gnu gcc-i686-linux-gnu gcc-s390x-linux-gnu gcc-riscv64-linux-gnu
 clang libclang-rt-dev python3-sphinx python3-yaml
 libglib2.0-dev python3-venv ninja-build seabios
 libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing="$missing $p"
done
if [ -n "$missing" ]; then
	echo "deps: installing:$missing"
	SUDO=""
	[ "$(id -u)" = 0 ] || SUDO=sudo
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
else
	echo "deps: all present"
fi
