# Sourced by scripts/mk-initramfs.sh when a qemu/libvirt test is in the
# initramfs: Debian's libvirt (bookworm 9.0, scripts/deps.sh) for
# qemu/tests/vm/libvirt.sh.  The minimal set: the monolithic libvirtd with
# only its QEMU driver module (and the local-file storage module the
# QEMU driver uses for disk images), virsh, the shared libraries ldd names for
# them, libvirt's CPU map (the QEMU driver reads it to describe the host
# CPU), and a passwd/group with the unprivileged user the session-mode
# daemons run as.  Uses add_dynamic and ROOT of mk-initramfs.sh.
lv_libdir=$(dirname "$(readlink -f "$(ldd /usr/sbin/libvirtd | awk '/libvirt\.so/ { print $3 }')")")
lv_qemu_driver=$lv_libdir/libvirt/connection-driver/libvirt_driver_qemu.so
lv_file_fs=$lv_libdir/libvirt/storage-file/libvirt_storage_file_fs.so
for f in /usr/sbin/libvirtd /usr/bin/virsh "$lv_qemu_driver" "$lv_file_fs"; do
	[ -e "$f" ] || die "$f missing (scripts/deps.sh installs libvirt-daemon-driver-qemu, libvirt-clients)"
done
add_dynamic /usr/sbin/libvirtd usr/sbin/libvirtd
add_dynamic /usr/bin/virsh usr/bin/virsh
add_dynamic "$lv_qemu_driver" "${lv_qemu_driver#/}"
add_dynamic "$lv_file_fs" "${lv_file_fs#/}"
mkdir -p "$ROOT/usr/share/libvirt"
cp -r /usr/share/libvirt/cpu_map "$ROOT/usr/share/libvirt/"
mkdir -p "$ROOT/etc"
printf 'root:x:0:0:root:/root:/bin/sh\ngmemlv:x:1000:1000:libvirt test:/tmp:/bin/sh\n' > "$ROOT/etc/passwd"
printf 'root:x:0:\ngmemlv:x:1000:\n' > "$ROOT/etc/group"
# the root directory is mktemp's (0700): the user must get through it
chmod 755 "$ROOT"
