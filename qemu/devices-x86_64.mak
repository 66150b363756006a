# Devices of our KVM-only x86_64 QEMU (built with --without-default-devices,
# so only what is listed here and what it selects is in).  The boards the
# migration tests use: q35 (QEMU's migration-test on x86_64, AHCI disk) and pc
# (i440fx, IDE); both bring the PC basics (ISA serial, i8259/i8254, RTC, ACPI).
CONFIG_Q35=y
CONFIG_I440FX=y
# isa-debug-exit: lets a test guest end QEMU with a status.
CONFIG_ISA_DEBUG=y
# ACPI_X86 selects ACPI_CXL, whose hw/acpi/cxl.c calls into hw/cxl/, which
# only "default y" (not built with --without-default-devices) would bring:
# without it QEMU 10.2.2 fails to link (cxl_fmws_get_all_sorted).  CXL
# depends on PXB (the PCI expander bridge), and hw/cxl/ needs the type 3
# device code (CXL_MEM_DEVICE) to link.
CONFIG_PXB=y
CONFIG_CXL=y
CONFIG_CXL_MEM_DEVICE=y
