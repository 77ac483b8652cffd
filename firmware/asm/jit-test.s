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
 *     load hold, those after it do not, and the fault names the load's address and RIP;
 *   - SSE integer work run hot: a byte search with PCMPEQB and PMOVMSKB, a checksum through
 *     PADDD, shuffles and shifts (its value is the interpreter's, KVM's and QEMU's too);
 *   - string instructions run hot across pages: REP MOVSB between two unaligned buffers,
 *     REP STOSQ with an element straddling two pages, and PUSH of memory operands, one
 *     addressed through RSP (the address uses RSP as it was before the push);
 *   - bit strings: BTS, BTC, BTR and BT on memory with 64-, 32- and 16-bit register
 *     offsets, negative and far past the operand;
 *   - CMPXCHG16B that succeeds, then fails and loads the new value;
 *   - segment selectors read into 16-, 32- and 64-bit registers, in a frame LEAVE ends;
 *   - an instruction that runs into the next page, run hot, then its bytes on the second
 *     page rewritten;
 *   - SWAPGS, with GS-relative loads on either side.
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
    .set CR4_OSFXSR, 1 << 9
    .set SSE_BYTES, 4096            /* the buffer the SSE checks work on */
    .set SSE_DATA, 0x300000         /* RAM, identity-mapped */
    .set STRING_DATA, 0x310000      /* RAM, identity-mapped */
    .set STRING_SRC, 0x0123         /* offsets in it */
    .set STRING_DST, 0x2f80
    .set STRING_BYTES, 6000
    .set STRING_FILL, 0x5ff4        /* its third qword straddles a page boundary */
    .set STRING_QWORDS, 700
    .set STRING_END, STRING_FILL + 8 * STRING_QWORDS
    .set PUSHED, 0x1122334455667788
    .set SPANNING, 0x320000 - 3     /* mov $imm32, %eax with two bytes on each page */
    .set MSR_GS_BASE, 0xc0000101
    .set MSR_KERNEL_GS_BASE, 0xc0000102
    .set GS_WORD, 0x111             /* the qword at GS's base */
    .set KERNEL_GS_WORD, 0x2220     /* the qword at IA32_KERNEL_GS_BASE */

    .bss
    .balign 8
space_roots:
    .skip 2 * 8
bit_string:
    .skip 256
    .balign 16
double_quad:
    .skip 16
gs_word:
    .skip 8
kernel_gs_word:
    .skip 8

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
sse_search_label:
    .asciz "sse: bytes equal to 0x5a found by pcmpeqb/pmovmskb"
sse_sum_label:
    .asciz "sse: paddd/pshufd/punpck checksum"
strings_label:
    .asciz "strings: rep movsb and rep stosq across pages, hash"
push_label:
    .asciz "push m64: the qword pushed, pushed again through rsp"
bits_label:
    .asciz "bit strings: the carries and the words touched"
cx16_label:
    .asciz "cmpxchg16b: both outcomes and the value loaded"
sreg_label:
    .asciz "mov r, sreg and leave: the selectors read"
spanning_label:
    .asciz "across pages: a hot instruction's bytes on its second page rewritten"
swapgs_label:
    .asciz "swapgs: the qwords read through gs after each"

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
    call check_sse
    call check_strings
    call check_spanning
    call check_swapgs
    jmp report_checks

/* write_returner(%rdi = where, %esi = value): writes mov $value, %eax; ret at %rdi. */
write_returner:
    movb $MOV_EAX, (%rdi)
    mov %esi, 1(%rdi)
    movb $RET, 5(%rdi)
    ret

/* call_hot(%rbx = function, %r13 = its argument): calls it HOT times with %rdi = %r13;
 * returns what the last call returned. */
call_hot:
    push %r12
    mov $HOT, %r12d
.Lcall_hot:
    mov %r13, %rdi
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

/* sse_count(%rdi = buffer, %ecx = 16-byte blocks): the number of bytes equal to 0x5a. */
sse_count:
    mov $0x5a5a5a5a, %eax
    movd %eax, %xmm1
    pshufd $0, %xmm1, %xmm1
    xor %eax, %eax
.Lsse_count_block:
    movdqa (%rdi), %xmm0
    pcmpeqb %xmm1, %xmm0
    pmovmskb %xmm0, %edx
    popcnt %edx, %edx
    add %edx, %eax
    add $16, %rdi
    dec %ecx
    jnz .Lsse_count_block
    ret

/* sse_sum(%rdi = buffer, %ecx = 16-byte blocks): a checksum of the buffer mixed through
 * PADDD, PSHUFD, PUNPCKLDQ, PXOR and PSLLD, folded to 64 bits. */
sse_sum:
    pxor %xmm2, %xmm2
    pxor %xmm3, %xmm3
.Lsse_sum_block:
    movdqu (%rdi), %xmm0
    paddd %xmm0, %xmm2
    pshufd $0x1b, %xmm2, %xmm2
    movdqa %xmm0, %xmm4
    punpckldq %xmm2, %xmm4
    pxor %xmm4, %xmm3
    pslld $1, %xmm3
    add $16, %rdi
    dec %ecx
    jnz .Lsse_sum_block
    paddd %xmm3, %xmm2
    movq %xmm2, %rax
    psrldq $8, %xmm2
    movq %xmm2, %rdx
    xor %rdx, %rax
    ret

/* SSE on (CR4.OSFXSR): a buffer of pseudo-random bytes with every 7th byte 0x5a (and no
 * other), searched and summed HOT times. */
check_sse:
    push %rbx
    push %r12
    mov %cr4, %rax
    or $CR4_OSFXSR, %rax
    mov %rax, %cr4
    mov $SSE_DATA, %edi
    mov $0x12345678, %eax
    xor %ecx, %ecx
.Lsse_fill:
    imul $1103515245, %eax, %eax
    add $12345, %eax
    mov %eax, %edx
    shr $16, %edx
    cmp $0x5a, %dl
    jne .Lsse_fill_byte
    inc %dl                         /* only the 0x5a bytes placed below count */
.Lsse_fill_byte:
    mov %dl, (%rdi, %rcx)
    inc %ecx
    cmp $SSE_BYTES, %ecx
    jb .Lsse_fill
    xor %ecx, %ecx
.Lsse_mark:
    movb $0x5a, (%rdi, %rcx)
    add $7, %ecx
    cmp $SSE_BYTES, %ecx
    jb .Lsse_mark

    mov $HOT, %r12d
.Lsse_hot:
    mov $SSE_DATA, %edi
    mov $SSE_BYTES / 16, %ecx
    call sse_count
    mov %eax, %ebx
    mov $SSE_DATA, %edi
    mov $SSE_BYTES / 16, %ecx
    call sse_sum
    dec %r12d
    jnz .Lsse_hot
    push %rax
    lea sse_search_label(%rip), %rdi
    mov %ebx, %esi
    mov $(SSE_BYTES + 6) / 7, %edx
    call check_equal
    pop %rsi
    lea sse_sum_label(%rip), %rdi
    mov %rsi, %rdx                  /* reported, not checked: the backends must agree */
    call check_equal

    pop %r12
    pop %rbx
    ret

/* strings_once: REP MOVSB of STRING_BYTES from STRING_SRC to STRING_DST, REP STOSQ of
 * STRING_QWORDS at STRING_FILL; returns a hash of STRING_DST up to STRING_END. */
strings_once:
    mov $STRING_DATA + STRING_SRC, %esi
    mov $STRING_DATA + STRING_DST, %edi
    mov $STRING_BYTES, %ecx
    rep movsb
    mov $STRING_DATA + STRING_FILL, %edi
    mov $STRING_QWORDS, %ecx
    movabs $0x0102030405060708, %rax
    rep stosq
    mov $STRING_DATA + STRING_DST, %esi
    mov $(STRING_END - STRING_DST) / 4, %ecx
    xor %eax, %eax
.Lstrings_hash:
    rol $5, %rax
    xor (%rsi), %eax
    add $4, %rsi
    dec %ecx
    jnz .Lstrings_hash
    ret

/* push_once(%rdi = a qword): pushes it, then pushes the stack's top again; returns the
 * second value, plus how far the two differ. */
push_once:
    push (%rdi)
    push (%rsp)
    pop %rax
    pop %rdx
    sub %rdx, %rax
    add %rdx, %rax
    ret

/* A function whose MOV's immediate straddles two pages returns 0x11112222 until it is hot,
 * then the immediate's half on the second page changes. */
check_spanning:
    push %rbx
    mov $SPANNING, %ebx
    mov %ebx, %edi
    mov $0x11112222, %esi
    call write_returner
    call call_hot
    movw $0x3333, SPANNING + 3
    call *%rbx
    lea spanning_label(%rip), %rdi
    mov %eax, %esi
    mov $0x33332222, %edx
    call check_equal
    pop %rbx
    ret

/* swapgs_once: reads %gs:0 after SWAPGS and after SWAPGS again; returns the first plus
 * twice the second. */
swapgs_once:
    swapgs
    mov %gs:0, %rax
    swapgs
    mov %gs:0, %rdx
    lea (%rax, %rdx, 2), %rax
    ret

/* GS's base at gs_word, IA32_KERNEL_GS_BASE at kernel_gs_word, swapgs_once run hot; both
 * bases are zero again after. */
check_swapgs:
    push %rbx
    movq $GS_WORD, gs_word
    movq $KERNEL_GS_WORD, kernel_gs_word
    xor %edx, %edx
    mov $MSR_GS_BASE, %ecx
    mov $gs_word, %eax
    wrmsr
    mov $MSR_KERNEL_GS_BASE, %ecx
    mov $kernel_gs_word, %eax
    wrmsr
    lea swapgs_once(%rip), %rbx
    call call_hot
    lea swapgs_label(%rip), %rdi
    mov %rax, %rsi
    mov $KERNEL_GS_WORD + 2 * GS_WORD, %edx
    call check_equal
    xor %eax, %eax
    xor %edx, %edx
    mov $MSR_GS_BASE, %ecx
    wrmsr
    mov $MSR_KERNEL_GS_BASE, %ecx
    wrmsr
    pop %rbx
    ret

/* sreg_once: in a frame of its own, reads CS into EAX (zero-extending), SS into CX (the
 * rest of RCX kept) and DS into RDX; returns them folded into one value. */
sreg_once:
    push %rbp
    mov %rsp, %rbp
    sub $32, %rsp
    mov $-1, %rax
    mov %cs, %eax
    mov $-1, %rcx
    mov %ss, %cx
    mov $-1, %rdx
    mov %ds, %rdx
    mov %rcx, -8(%rbp)
    shl $8, %rcx
    xor %rcx, %rax
    shl $24, %rdx
    xor %rdx, %rax
    leave
    ret

/* cx16_once(%rdi = 16 aligned bytes): LOCK CMPXCHG16B adding 1 and 2 to the two quadwords
 * (it succeeds), then CMPXCHG16B expecting the old value (it fails and loads the new);
 * returns the low quadword plus 3 times the high one, plus 4 if the first succeeded and 8
 * if the second did. */
cx16_once:
    push %rbx
    mov (%rdi), %rax
    mov 8(%rdi), %rdx
    lea 1(%rax), %rbx
    lea 2(%rdx), %rcx
    lock cmpxchg16b (%rdi)
    setz %r8b
    cmpxchg16b (%rdi)
    setz %r9b
    lea (%rdx, %rdx, 2), %rdx
    add %rdx, %rax
    movzbl %r8b, %r8d
    movzbl %r9b, %r9d
    lea (%rax, %r8, 4), %rax
    lea (%rax, %r9, 8), %rax
    pop %rbx
    ret

/* bits_once(%rdi = the middle of a bit string): BTS at bit -70 (64-bit offset), BTC at
 * 200 (32-bit), BTR at 1000 (16-bit), BT at -70; returns their carries in bits 3:0 and the
 * words they touched, XORed, above. */
bits_once:
    xor %eax, %eax
    mov $-70, %rcx
    bts %rcx, (%rdi)
    adc %eax, %eax
    mov $200, %ecx
    btc %ecx, (%rdi)
    adc %eax, %eax
    mov $1000, %cx
    btr %cx, (%rdi)
    adc %eax, %eax
    mov $-70, %rcx
    bt %rcx, (%rdi)
    adc %eax, %eax
    mov -16(%rdi), %rdx
    xor 24(%rdi), %rdx
    xor 120(%rdi), %rdx
    shl $4, %rdx
    or %rdx, %rax
    ret

/* report_value(%rdi = label, %rax = value): reports the value as a check that passes: it is
 * not known here, but every backend must print the same. */
report_value:
    mov %rax, %rsi
    mov %rax, %rdx
    jmp check_equal

/* The source filled with bytes 7 * i, then the string and push functions run HOT times. */
check_strings:
    push %rbx
    push %r12
    push %r13
    mov $STRING_DATA + STRING_SRC, %edi
    xor %ecx, %ecx
.Lstrings_fill:
    imul $7, %ecx, %eax
    mov %al, (%rdi, %rcx)
    inc %ecx
    cmp $STRING_BYTES, %ecx
    jb .Lstrings_fill
    movabs $PUSHED, %rax
    push %rax
    mov $HOT, %r12d
.Lstrings_hot:
    call strings_once
    mov %rax, %rbx
    mov %rsp, %rdi
    call push_once
    mov %rax, %r13
    dec %r12d
    jnz .Lstrings_hot
    pop %rax
    lea push_label(%rip), %rdi
    mov %r13, %rsi
    movabs $PUSHED, %rdx
    call check_equal
    lea strings_label(%rip), %rdi
    mov %rbx, %rax
    call report_value

    lea bits_once(%rip), %rbx
    mov $bit_string + 128, %r13d
    call call_hot
    lea bits_label(%rip), %rdi
    call report_value

    lea cx16_once(%rip), %rbx
    mov $double_quad, %r13d
    call call_hot
    lea cx16_label(%rip), %rdi
    mov %rax, %rsi
    /* After HOT rounds the quadwords hold HOT and 2 * HOT, which the second exchange
     * loaded (HOT + 3 * 2 * HOT); the first succeeded (4), the second failed. */
    mov $7 * HOT + 4, %edx
    call check_equal

    lea sreg_once(%rip), %rbx
    call call_hot
    lea sreg_label(%rip), %rdi
    call report_value
    pop %r13
    pop %r12
    pop %rbx
    ret

    .section .note.GNU-stack, "", @progbits
