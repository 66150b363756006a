# Devices of our KVM-only x86_64 QEMU (built with --without-default-devices,
# so only what is listed here and what it selects is in).  The boards the
# migration tests use: q35 (QEMU's migration-test on x86_64, AHCI disk) and pc
# (i440fx, IDE); both bring the PC basics (ISA serial, i8259/i8254, RTC, ACPI).
CONFIG_Q35=y
CONFIG_I440FX=y
# isa-debug-exit: lets a test guest end QEMU with a status.
CONFIG_ISA_DEBUG=y
