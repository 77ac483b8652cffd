/*
 * jit-test.s: code a translator must not get wrong, run often enough to be translated, then
 * changed under it. Each check prints in checks.s's format; the exit status is the number of
 * failed checks. Every result is architectural, so the image prints the same on the
 * interpreter, the JIT, KVM and QEMU.
 *   - self-modifying code: a function's immediate rewritten from outside after it ran hot;
 *   - a block that writes the instruction it is about to run;
 *   - code written through one virtual alias and run through another;
 *   - one virtual address holding different code in two address spaces (CR3 switches);
 *   - a page fault in the middle of a hot block: the registers written before the faulting
 *     load hold, those after it do not, and the fault names the load's address and RIP.
 */
    .include "umbra.inc"
    IMAGE_STRINGS jit-test

    .set HOT, 64                    /* calls before a change: more than any threshold used */
    /* Test mappings live in PML4 slot 128, which the boot identity map leaves empty. */
    .set ALIAS_VA, 0x0000400000000000
    .set REMAP_VA, 0x0000400000010000
    .set UNMAPPED_VA, 0x0000500000000000
    /* A function that returns an immediate: mov $imm32, %eax; ret. */
    .set MOV_EAX, 0xb8
    .set RET, 0xc3

    .bss
    .balign 8
space_roots:
    .skip 2 * 8

    .section .rodata
smc_outside_label:
    .asciz "self-modifying code: a hot function rewritten returns"
smc_own_label:
    .asciz "self-modifying code: calls whose block rewrote itself wrongly"
alias_label:
    .asciz "alias: code written at one address, run at another, returns"
alias_identity_label:
    .asciz "alias: the same code run at its first address returns"
remap_label:
    .asciz "cr3 remap: calls that ran the other space's code"
fault_eax_label:
    .asciz "fault mid-block: eax (written before the load)"
fault_ecx_label:
    .asciz "fault mid-block: ecx (written before the load)"
fault_edx_label:
    .asciz "fault mid-block: edx (the load's target, unchanged)"
fault_cr2_label:
    .asciz "fault mid-block: cr2"
fault_rip_label:
    .asciz "fault mid-block: rip"

    .text
    .code64

/* image_main: runs the checks; returns the number that failed. */
    .global image_main
image_main:
    call check_outside_write
    call check_own_write
    call check_alias
    call check_cr3_remap
    call check_fault_mid_block
    jmp report_checks

/* write_returner(%rdi = where, %esi = value): writes mov $value, %eax; ret at %rdi. */
write_returner:
    movb $MOV_EAX, (%rdi)
    mov %esi, 1(%rdi)
    movb $RET, 5(%rdi)
    ret

/* call_hot(%rbx = function): calls it HOT times; returns what the last call returned. */
call_hot:
    push %r12
    mov $HOT, %r12d
.Lcall_hot:
    call *%rbx
    dec %r12d
    jnz .Lcall_hot
    pop %r12
    ret

/* A function in RAM returns 0x1111 until it is hot, then its immediate changes. */
check_outside_write:
    push %rbx
    call alloc_frame
    mov %rax, %rbx
    mov %rax, %rdi
    mov $0x1111, %esi
    call write_returner
    call call_hot
    movl $0x2222, 1(%rbx)
    call *%rbx
    lea smc_outside_label(%rip), %rdi
    mov %eax, %esi
    mov $0x2222, %edx
    call check_equal
    pop %rbx
    ret

/* own_writer: stores 0x3333 into the immediate of the mov that follows the store, in the
 * same block; copied to RAM and run from there. */
own_writer:
    movl $0x3333, .Lown_target + 1(%rip)
.Lown_target:
    mov $0x4444, %eax
    ret
own_writer_end:

/* Each call first has 0x4444 put back from outside, then must return 0x3333. */
check_own_write:
    push %rbx
    push %r12
    push %r13
    call alloc_frame
    mov %rax, %rbx
    mov %rax, %rdi
    lea own_writer(%rip), %rsi
    mov $own_writer_end - own_writer, %ecx
    rep movsb
    xor %r13d, %r13d                /* wrong results */
    mov $HOT, %r12d
.Lown_call:
    movl $0x4444, .Lown_target + 1 - own_writer(%rbx)
    call *%rbx
    cmp $0x3333, %eax
    setne %al
    movzbl %al, %eax
    add %eax, %r13d
    dec %r12d
    jnz .Lown_call
    lea smc_own_label(%rip), %rdi
    mov %r13, %rsi
    xor %edx, %edx
    call check_equal
    pop %r13
    pop %r12
    pop %rbx
    ret

/* A frame mapped at ALIAS_VA too: written through the identity map, run through the alias,
 * rewritten once the alias is hot, and run through both. */
check_alias:
    push %rbx
    push %r12
    call alloc_frame
    mov %rax, %r12                  /* the identity address */
    lea PTE_P + PTE_RW(%rax), %rdx
    mov $boot_pml4, %edi
    movabs $ALIAS_VA, %rsi
    mov $PT_LEVEL_4K, %ecx
    call map_page
    mov %r12, %rdi
    mov $0x5555, %esi
    call write_returner
    movabs $ALIAS_VA, %rbx
    call call_hot
    movl $0x6666, 1(%r12)
    call *%rbx
    lea alias_label(%rip), %rdi
    mov %eax, %esi
    mov $0x6666, %edx
    call check_equal
    call *%r12
    lea alias_identity_label(%rip), %rdi
    mov %eax, %esi
    mov $0x6666, %edx
    call check_equal
    pop %r12
    pop %rbx
    ret

/* Two address spaces share the boot identity map and map REMAP_VA to two frames, one
 * returning 0x7777, the other 0x8888; calls alternate between them. */
check_cr3_remap:
    push %rbx
    push %r12
    push %r13
    xor %ebx, %ebx
.Lremap_space:
    call alloc_frame
    mov %rax, %r12                  /* the space's PML4 */
    mov %rax, space_roots(, %rbx, 8)
    mov boot_pml4, %rax
    mov %rax, (%r12)
    call alloc_frame                /* the frame REMAP_VA maps to in this space */
    mov %rax, %r13
    mov %rax, %rdi
    imul $0x1111, %ebx, %esi
    add $0x7777, %esi               /* 0x7777, then 0x8888 */
    call write_returner
    lea PTE_P + PTE_RW(%r13), %rdx
    mov %r12, %rdi
    movabs $REMAP_VA, %rsi
    mov $PT_LEVEL_4K, %ecx
    call map_page
    inc %ebx
    cmp $2, %ebx
    jb .Lremap_space

    xor %r13d, %r13d                /* calls that returned the other space's value */
    mov $HOT, %r12d
    movabs $REMAP_VA, %rbx
.Lremap_call:
    mov space_roots, %rax
    mov %rax, %cr3
    call *%rbx
    cmp $0x7777, %eax
    setne %al
    movzbl %al, %eax
    add %eax, %r13d
    mov space_roots + 8, %rax
    mov %rax, %cr3
    call *%rbx
    cmp $0x8888, %eax
    setne %al
    movzbl %al, %eax
    add %eax, %r13d
    dec %r12d
    jnz .Lremap_call
    mov $boot_pml4, %eax
    mov %rax, %cr3
    lea remap_label(%rip), %rdi
    mov %r13, %rsi
    xor %edx, %edx
    call check_equal
    pop %r13
    pop %r12
    pop %rbx
    ret

/* fault_block(%rsi = address): one block whose load from %rsi may fault between writes. */
fault_block:
    mov $1, %eax
    mov $2, %ecx
.Lfault_load:
    mov (%rsi), %rdx
    mov $3, %eax
    mov $4, %ecx
    ret

/* The block runs hot on a mapped address, then faults on an unmapped one; the #PF handler
 * resumes at .Lfault_recovered, with the block's return address still on the stack. */
check_fault_mid_block:
    push %rbx
    mov $HOT, %ebx
.Lfault_warm:
    mov %rsp, %rsi
    call fault_block
    dec %ebx
    jnz .Lfault_warm
    movq $0, pf_cr2
    movq $0, pf_rip
    lea .Lfault_recovered(%rip), %rax
    mov %rax, pf_recovery_rip
    mov $0x5a5a, %edx
    movabs $UNMAPPED_VA, %rsi
    call fault_block
    /* Not reached: the load faults. */
    mov $0xdead, %edx
.Lfault_recovered:
    add $8, %rsp                    /* fault_block's return address */
    push %rcx
    push %rdx
    lea fault_eax_label(%rip), %rdi
    mov %eax, %esi
    mov $1, %edx
    call check_equal
    pop %rbx                        /* edx at the fault */
    pop %rsi                        /* ecx at the fault */
    lea fault_ecx_label(%rip), %rdi
    mov $2, %edx
    call check_equal
    lea fault_edx_label(%rip), %rdi
    mov %rbx, %rsi
    mov $0x5a5a, %edx
    call check_equal
    lea fault_cr2_label(%rip), %rdi
    mov pf_cr2, %rsi
    movabs $UNMAPPED_VA, %rdx
    call check_equal
    lea fault_rip_label(%rip), %rdi
    mov pf_rip, %rsi
    lea .Lfault_load(%rip), %rdx
    call check_equal
    pop %rbx
    ret

    .section .note.GNU-stack, "", @progbits
