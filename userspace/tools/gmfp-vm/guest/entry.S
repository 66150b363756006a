/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * gmfp-vm's guest payload: entry, descriptor tables, interrupt stubs and
 * the task switch.  The VMM enters at _start in 64-bit mode (paging on,
 * CS 0x08, data 0x10, interrupts off); we load our own GDT so that iretq
 * finds the selectors, then call guest_main().
 */
	.code64
	.section .text.start, "ax"
	.globl _start
_start:
	lea	boot_stack_top(%rip), %rsp
	lgdt	gdt_desc(%rip)
	mov	$0x10, %ax
	mov	%ax, %ds
	mov	%ax, %es
	mov	%ax, %ss
	mov	%ax, %fs
	mov	%ax, %gs
	pushq	$0x08
	lea	1f(%rip), %rax
	pushq	%rax
	lretq
1:	call	guest_main
2:	cli
	hlt
	jmp	2b

	.text
/* caller-saved registers around a C handler */
.macro SAVE
	push	%rax
	push	%rcx
	push	%rdx
	push	%rsi
	push	%rdi
	push	%r8
	push	%r9
	push	%r10
	push	%r11
.endm
.macro RESTORE
	pop	%r11
	pop	%r10
	pop	%r9
	pop	%r8
	pop	%rdi
	pop	%rsi
	pop	%rdx
	pop	%rcx
	pop	%rax
.endm

/*
 * #PF: error code on the stack.  48 bytes of frame from a 16-byte aligned
 * stack, 72 of registers: 8 more keep the call aligned.
 */
	.globl	isr_pf
isr_pf:
	SAVE
	cld
	lea	72(%rsp), %rdi		/* error code, rip, cs, rflags, rsp, ss */
	sub	$8, %rsp
	call	pf_handler
	add	$8, %rsp
	RESTORE
	add	$8, %rsp
	iretq

/* "page ready": 40 bytes of frame + 72 of registers: aligned */
	.globl	isr_apf
isr_apf:
	SAVE
	cld
	call	apf_handler
	RESTORE
	iretq

	.globl	isr_spurious
isr_spurious:
	iretq

/* Any other exception: vector (and error code, 0 if none) to fatal(). */
.macro FAULT vec, has_err
	.globl	isr_fault_\vec
isr_fault_\vec:
	.if \has_err == 0
	pushq	$0
	.endif
	pushq	$\vec
	jmp	fault_common
.endm
	FAULT 0,0
	FAULT 1,0
	FAULT 2,0
	FAULT 3,0
	FAULT 4,0
	FAULT 5,0
	FAULT 6,0
	FAULT 7,0
	FAULT 8,1
	FAULT 9,0
	FAULT 10,1
	FAULT 11,1
	FAULT 12,1
	FAULT 13,1
	FAULT 16,0
	FAULT 17,1
	FAULT 18,0
	FAULT 19,0
	FAULT 20,0
	FAULT 21,1
fault_common:
	mov	%rsp, %rdi		/* vector, error code, rip, ... */
	and	$-16, %rsp
	call	fatal			/* does not return */
3:	cli
	hlt
	jmp	3b

/*
 * void switch_stack(uint64_t *save_rsp, uint64_t new_rsp): save the
 * callee-saved registers on this stack, park it, resume the other one.
 */
	.globl	switch_stack
switch_stack:
	push	%rbx
	push	%rbp
	push	%r12
	push	%r13
	push	%r14
	push	%r15
	mov	%rsp, (%rdi)
	mov	%rsi, %rsp
	pop	%r15
	pop	%r14
	pop	%r13
	pop	%r12
	pop	%rbp
	pop	%rbx
	ret

	.data
	.balign	16
gdt:
	.quad	0
	.quad	0x00af9b000000ffff	/* 0x08: 64-bit code, DPL 0 */
	.quad	0x00cf93000000ffff	/* 0x10: data */
gdt_end:
	.balign	8
	.word	0
	.word	0
	.word	0
gdt_desc:
	.word	gdt_end - gdt - 1
	.quad	gdt

	.bss
	.balign	16
	.globl	boot_stack_top
	.space	16384
boot_stack_top:

	.section .note.GNU-stack, "", @progbits
