/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The guest payload (guest/, a flat binary) inside gmfp-vm. */
	.section .rodata
	.balign	4096
	.globl	gv_payload_start
	.globl	gv_payload_end
gv_payload_start:
	.incbin	GV_PAYLOAD_BIN
gv_payload_end:
	.section .note.GNU-stack, "", @progbits
