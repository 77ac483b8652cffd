/*
 * irq-test.s: the PC's interrupt hardware, programmed the way an OS programs it, so that
 * Umbra's device models and interrupt delivery can be held against QEMU's. In order:
 *   - probes the 8259 pair as Linux's probe_8259A does (the master's IMR must read back);
 *   - times 10 ms one-shots of PIT channel 2 with RDTSC, polling its OUT in port 0x61 as
 *     Linux's pit_calibrate_tsc does, and keeps the shortest: the time base for every
 *     deadline below;
 *   - initialises the 8259 pair as Linux's init_8259A does (vectors 0x20 and 0x28, the slave
 *     on IRQ 2, normal EOI), installs gates for vectors 0x20-0x2f, puts the local APIC in
 *     virtual wire mode as a BIOS leaves it for the OS (see local_apic_virtual_wire), runs
 *     PIT channel 0 in mode 2 at 1000 Hz (count 1193) and counts IRQ 0 in a HLT loop up to
 *     20 interrupts; the TSC between the 1st and the 20th (19 periods) must be 5-100 ms at
 *     the rate measured;
 *   - reads the RTC's time, waiting out update cycles as Linux's mc146818_avoid_UIP does,
 *     and checks every field is valid BCD or binary, as register B says, and in range;
 *   - counts 10 RTC periodic interrupts (1024 Hz) on IRQ 8 through the slave, the handler
 *     reading register C to acknowledge each;
 *   - sends a line on the UART one byte per THRE interrupt (IRQ 4), as a serial driver does:
 *     the main code writes its first byte with IER.THRI set, the handler reads IIR and writes
 *     each next byte, and stops the interrupt (IER = 0) when none is left;
 *   - checks no other vector of the 8259s fired, masks everything and reports.
 * Each result is a line in checks.s's format whose value does not depend on timing (a count,
 * a register value, or 1 for a bound met), so QEMU and Umbra print the same lines. The exit
 * status is the number of failed checks. When the PIC does not answer or the TSC cannot be
 * calibrated, the run reports at once; when IRQ 0 does not work, it skips the waits that
 * need it.
 *
 * Bounded waits. The IRQ handlers send their EOIs before returning, so between interrupts
 * nothing is in service. Before the first HLT the code polls the master's IRR (IF clear)
 * until the PIT has raised IRQ 0, then spins with IF set until the CPU has taken it, each
 * with a deadline; after that IRQ 0 stays unmasked until the end, so every HLT wakes within
 * a millisecond and each wait looks at its TSC deadline after each wake-up. A missing
 * interrupt thus gives a failed check rather than a hang.
 *
 * Unlike the other images this one uses STI, RDTSC and interrupts; on KVM it needs the
 * backend to deliver the platform's interrupts.
 */
    .include "umbra.inc"
    IMAGE_STRINGS irq-test

/* The 8259 pair. */
    .set PIC_MASTER_CMD, 0x20
    .set PIC_MASTER_IMR, 0x21
    .set PIC_SLAVE_CMD, 0xa0
    .set PIC_SLAVE_IMR, 0xa1
    .set PIC_CASCADE_IR, 2              /* the slave's INT on the master's IR2 */
    .set PIC_ICW1, 0x11                 /* edge triggered, cascade, ICW4 follows */
    .set PIC_ICW4_8086, 0x01            /* 8086 mode, normal EOI */
    .set PIC_OCW3_READ_IRR, 0x0a
    .set PIC_EOI, 0x20                  /* OCW2: non-specific EOI */
    .set PIC_PROBE_MASK, ~(1 << PIC_CASCADE_IR) & 0xff
    .set IO_DELAY_PORT, 0x80            /* Linux's outb_pic follows each byte with a write here */
    .set VECTOR_MASTER_BASE, 0x20
    .set VECTOR_SLAVE_BASE, 0x28
    .set IRQ_VECTORS, 16
    .set IRQ_PIT, 0
    .set IRQ_UART, 4
    .set IRQ_RTC, 8

/* The 8254 and system control port B. */
    .set PIT_CH0, 0x40
    .set PIT_CH2, 0x42
    .set PIT_MODE, 0x43
    .set PIT_CH0_RATE_GENERATOR, 0x34   /* channel 0, LSB then MSB, mode 2, binary */
    .set PIT_CH2_ONE_SHOT, 0xb0         /* channel 2, LSB then MSB, mode 0, binary */
    .set PIT_LATCH_1000HZ, 1193         /* Linux's PIT_LATCH for HZ = 1000 */
    .set PIT_LATCH_10MS, 11931          /* Linux's CAL_LATCH: 1193182 Hz / 100 */
    .set PORT_B, 0x61
    .set PORT_B_GATE2, 0x01
    .set PORT_B_SPEAKER, 0x02
    .set PORT_B_OUT2, 0x20
    .set CALIBRATIONS, 5
    .set CALIBRATION_MAX_POLLS, 50000000

/* The MC146818 RTC. */
    .set CMOS_INDEX, 0x70
    .set CMOS_DATA, 0x71
    .set RTC_SECONDS, 0x00
    .set RTC_MINUTES, 0x02
    .set RTC_HOURS, 0x04
    .set RTC_DAY_OF_MONTH, 0x07
    .set RTC_MONTH, 0x08
    .set RTC_YEAR, 0x09
    .set RTC_A, 0x0a
    .set RTC_B, 0x0b
    .set RTC_C, 0x0c
    .set RTC_A_UIP, 0x80
    .set RTC_A_1024HZ, 0x26             /* 32.768 kHz time base, periodic rate 6 */
    .set RTC_B_PIE, 0x40
    .set RTC_B_BINARY, 0x04
    .set RTC_B_24H, 0x02
    .set RTC_C_IRQF_PF, 0xc0
    .set RTC_HOUR_PM, 0x80
    .set RTC_READ_TRIES, 1000           /* each waits 100 us when an update is in progress */
    .set UIP_RECHECK_US, 100

/* The 16550 (UART_THR is in umbra.inc). */
    .set UART_IER, 0x3f9
    .set UART_IIR, 0x3fa
    .set UART_MCR, 0x3fc
    .set UART_IER_THRI, 0x02
    .set UART_IIR_ID, 0x0f
    .set UART_IIR_NONE, 0x01
    .set UART_IIR_THRI, 0x02
    .set UART_MCR_DTR_RTS_OUT2, 0x0b

/* The local APIC, mapped uncached at its reset address. */
    .set LAPIC_BASE, 0xfee00000
    .set LAPIC_SVR, 0xf0
    .set LAPIC_LVT_LINT0, 0x350
    .set LAPIC_LVT_LINT1, 0x360
    .set LAPIC_SVR_ENABLED_SPURIOUS_FF, 0x1ff
    .set LAPIC_DM_EXTINT, 0x700         /* unmasked: the 8259's INTR reaches the CPU */
    .set LAPIC_DM_NMI, 0x400
    .set PTE_PWT, 1 << 3
    .set PTE_PCD, 1 << 4

/* The IDT: traps.s fills the 32 exception gates; this image adds the 8259s' 16. */
    .set EXCEPTION_VECTORS, 32
    .set GATE_SIZE, 16
    .set GATE_INTERRUPT64, 0x8e00       /* present, DPL 0, 64-bit interrupt gate, IST 0 */
    .set IDT_GATES, VECTOR_MASTER_BASE + IRQ_VECTORS
    .set IRQ_STUB_SIZE, 8

    .set RTC_FIELD_COUNT, 6             /* the entries of rtc_fields */
    .set RTC_FIELD_SIZE, 3
    .set RTC_HOURS_FIELD, 2             /* the hours' entry, which 12-hour mode changes */

    .set PIT_INTERRUPTS, 20
    .set RTC_INTERRUPTS, 10
    .set REQUEST_DEADLINE_MS, 100
    .set WAIT_DEADLINE_MS, 1000
    /* The band for PIT_INTERRUPTS - 1 periods of 1 ms. Wide, since host load stretches
     * both sides of the comparison: the calibration when the host does not run the guest as
     * a one-shot ends, the span when an emulated PIT loses the ticks that come while the host
     * does not run the guest (a tick that comes while the last is still requested merges
     * with it). */
    .set SPAN_MIN_MS, 5
    .set SPAN_MAX_MS, 100

/* ---------------------------------------------------------------- RAM */

    .bss
    .balign GATE_SIZE
irq_idt:
    .skip IDT_GATES * GATE_SIZE

    .balign 8
tsc_per_10ms:
    .skip 8
pic_cached_mask:                        /* Linux's cached_irq_mask: bit n masks IRQ n */
    .skip 8
pit_ticks:
    .skip 8
pit_first_tsc:                          /* at the 1st IRQ 0 */
    .skip 8
pit_last_tsc:                           /* at the PIT_INTERRUPTS-th */
    .skip 8
rtc_ticks:
    .skip 8
rtc_unflagged:                          /* IRQ 8s whose register C lacked IRQF or PF */
    .skip 8
uart_cursor:                            /* the next byte of uart_line to send */
    .skip 8
uart_done:                              /* 1 once the handler found nothing left to send */
    .skip 8
uart_other_iir:                         /* IIR reads naming neither THRE nor no interrupt */
    .skip 8
unexpected_interrupts:                  /* the other vectors of the 8259s */
    .skip 8
rtc_time:                               /* one byte per field of rtc_fields, as read */
    .skip RTC_FIELD_COUNT
rtc_control:                            /* register B, read with the time */
    .skip 1

/* ---------------------------------------------------------------- ROM data */

    .section .rodata
irq_idt_descriptor:
    .word IDT_GATES * GATE_SIZE - 1
    .quad irq_idt

    .balign 8
/* The handler of each IRQ, called by irq_entry. */
irq_handlers:
    .quad pit_interrupt                 /* IRQ 0 */
    .quad unexpected_interrupt, unexpected_interrupt, unexpected_interrupt
    .quad uart_interrupt                /* IRQ 4 */
    .quad unexpected_interrupt, unexpected_interrupt, unexpected_interrupt
    .quad rtc_interrupt                 /* IRQ 8 */
    .quad unexpected_interrupt, unexpected_interrupt, unexpected_interrupt
    .quad unexpected_interrupt, unexpected_interrupt, unexpected_interrupt
    .quad unexpected_interrupt

/* The time fields: CMOS index, lowest and highest value (hours as in 24-hour mode). The
 * seconds come first: mc146818_avoid_UIP reads them apart from the others. */
rtc_fields:
    .byte RTC_SECONDS, 0, 59
    .byte RTC_MINUTES, 0, 59
    .byte RTC_HOURS, 0, 23
    .byte RTC_DAY_OF_MONTH, 1, 31
    .byte RTC_MONTH, 1, 12
    .byte RTC_YEAR, 0, 99
rtc_fields_end:
    .if rtc_fields_end - rtc_fields != RTC_FIELD_COUNT * RTC_FIELD_SIZE
    .error "RTC_FIELD_COUNT does not count rtc_fields"
    .endif

pic_probe_label:
    .asciz "pic: master imr reads back the probe"
calibration_label:
    .asciz "pit channel 2: 10 ms one-shot timed by the tsc"
irq0_request_label:
    .asciz "pit irq0: request seen in the master's irr"
irq0_count_label:
    .asciz "pit irq0: interrupts taken of 20"
irq0_span_label:
    .asciz "pit irq0: 1st to 20th within 5-100 ms by the tsc"
rtc_settled_label:
    .asciz "rtc: time read clear of update cycles"
rtc_invalid_label:
    .asciz "rtc: fields invalid for register b's format"
irq8_count_label:
    .asciz "rtc irq8: interrupts taken of 10"
irq8_flags_label:
    .asciz "rtc irq8: register c reads without irqf and pf"
uart_unsent_label:
    .asciz "uart irq4: bytes left unsent"
uart_iir_label:
    .asciz "uart irq4: iir reads naming another cause"
unexpected_label:
    .asciz "pic: interrupts on other vectors"
uart_line:
    .asciz "uart: this line went out one byte per thre interrupt\n"

/* ---------------------------------------------------------------- code */

    .text
    .code64

/* image_main: runs the checks; returns the number that failed. */
    .global image_main
image_main:
    call probe_8259A
    test %eax, %eax
    jz .Lreport
    call calibrate_tsc
    test %eax, %eax
    jz .Lreport
    call init_8259A
    call install_irq_gates
    call local_apic_virtual_wire
    call check_pit_irq0
    test %eax, %eax
    jz .Lquiesce
    call check_rtc_time
    call check_rtc_irq8
    call check_uart_irq4
.Lquiesce:
    cli
    mov $0xff, %al
    out %al, $PIC_MASTER_IMR
    out %al, $PIC_SLAVE_IMR
    lea unexpected_label(%rip), %rdi
    mov unexpected_interrupts, %rsi
    xor %edx, %edx
    call check_equal
.Lreport:
    jmp report_checks

/* ---------------------------------------------------------------- time base */

/* read_tsc: returns the TSC in %rax. Clobbers %rdx. */
read_tsc:
    rdtsc
    shl $32, %rdx
    or %rdx, %rax
    ret

/*
 * time_one_shot: one 10 ms one-shot of channel 2 (mode 0: OUT low from the mode write until
 * the count runs out), timed from just before the count's last byte to the first poll that
 * sees OUT high, so it can only seem longer than it is. Returns the TSC ticks in %rax, or 0
 * if OUT was not low at the first poll (the one-shot did not run) or did not rise within
 * CALIBRATION_MAX_POLLS. Clobbers %rcx, %rdx, %r8.
 */
time_one_shot:
    mov $PIT_CH2_ONE_SHOT, %al
    out %al, $PIT_MODE
    mov $PIT_LATCH_10MS & 0xff, %al
    out %al, $PIT_CH2
    call read_tsc
    mov %rax, %r8
    mov $PIT_LATCH_10MS >> 8, %al
    out %al, $PIT_CH2
    xor %ecx, %ecx
.Lpoll_out2:
    in $PORT_B, %al
    test $PORT_B_OUT2, %al
    jnz .Lone_shot_ended
    inc %ecx
    cmp $CALIBRATION_MAX_POLLS, %ecx
    jb .Lpoll_out2
    xor %eax, %eax
    ret
.Lone_shot_ended:
    xor %eax, %eax
    jecxz .Lone_shot_timed
    call read_tsc
    sub %r8, %rax
.Lone_shot_timed:
    ret

/*
 * calibrate_tsc: Linux's pit_calibrate_tsc, taken as its caller takes it: channel 2's gate
 * up and the speaker off, CALIBRATIONS one-shots, the shortest kept (the host may stop the
 * guest during one, which only lengthens it). Stores it in tsc_per_10ms and checks that a
 * one-shot ran; returns 1 if one did, else 0. Clobbers %rax, %rcx, %rdx, %rsi, %rdi, %r8.
 */
calibrate_tsc:
    push %rbx
    push %r12
    in $PORT_B, %al
    and $~PORT_B_SPEAKER, %al
    or $PORT_B_GATE2, %al
    out %al, $PORT_B
    mov $-1, %rbx                       /* the shortest so far: none */
    mov $CALIBRATIONS, %r12d
.Lcalibrate:
    call time_one_shot
    test %rax, %rax
    jz .Lnext_calibration
    cmp %rbx, %rax
    jae .Lnext_calibration
    mov %rax, %rbx
.Lnext_calibration:
    dec %r12d
    jnz .Lcalibrate
    xor %esi, %esi
    cmp $-1, %rbx
    je .Lcalibrated
    mov %rbx, tsc_per_10ms
    mov $1, %esi
.Lcalibrated:
    mov %esi, %ebx
    lea calibration_label(%rip), %rdi
    mov $1, %edx
    call check_equal
    mov %ebx, %eax
    pop %r12
    pop %rbx
    ret

/* tsc_ticks_ms(%rdi = milliseconds): the TSC ticks in that many milliseconds, in %rax.
 * Clobbers %rcx, %rdx. */
tsc_ticks_ms:
    mov tsc_per_10ms, %rax
    mul %rdi
    mov $10, %ecx
    div %rcx
    ret

/* deadline_ms(%rdi = milliseconds): the TSC value that many milliseconds from now, in
 * %rax. Clobbers %rcx, %rdx. */
deadline_ms:
    call tsc_ticks_ms
    mov %rax, %rcx
    call read_tsc
    add %rcx, %rax
    ret

/* delay_us(%rdi = microseconds): spins that long. Clobbers %rax, %rcx, %rdx. */
delay_us:
    mov tsc_per_10ms, %rax
    mul %rdi
    mov $10000, %ecx
    div %rcx
    mov %rax, %rcx
    call read_tsc
    add %rax, %rcx
.Lspin:
    call read_tsc
    cmp %rcx, %rax
    jb .Lspin
    ret

/* ---------------------------------------------------------------- the 8259 pair */

/* probe_8259A: Linux's probe: with the slave masked, the master's IMR must read back what
 * was written; where no PIC answers the port reads 0xff. Checks it; returns 1 if the PIC
 * answered, else 0. Clobbers %rax, %rcx, %rdx, %rsi, %rdi. */
probe_8259A:
    mov $0xff, %al
    out %al, $PIC_SLAVE_IMR
    mov $PIC_PROBE_MASK, %al
    out %al, $PIC_MASTER_IMR
    in $PIC_MASTER_IMR, %al
    movzbl %al, %esi
    push %rsi
    lea pic_probe_label(%rip), %rdi
    mov $PIC_PROBE_MASK, %edx
    call check_equal
    pop %rsi
    xor %eax, %eax
    cmp $PIC_PROBE_MASK, %esi
    sete %al
    ret

/* OUTB_PIC value, port: Linux's outb_pic, a write followed by the I/O delay. */
.macro OUTB_PIC value, port
    mov $\value, %al
    out %al, $\port
    out %al, $IO_DELAY_PORT
.endm

/* init_8259A: Linux's init_8259A without auto-EOI: ICW1-4 to each chip with every IRQ
 * masked, a 100 us wait, then the masks as cached, here every IRQ masked (IRQ 0 is
 * unmasked when the PIT runs). Clobbers %rax, %rcx, %rdx, %rdi. */
init_8259A:
    movq $0xffff, pic_cached_mask
    mov $0xff, %al
    out %al, $PIC_MASTER_IMR
    OUTB_PIC PIC_ICW1, PIC_MASTER_CMD
    OUTB_PIC VECTOR_MASTER_BASE, PIC_MASTER_IMR
    OUTB_PIC 1 << PIC_CASCADE_IR, PIC_MASTER_IMR
    OUTB_PIC PIC_ICW4_8086, PIC_MASTER_IMR
    OUTB_PIC PIC_ICW1, PIC_SLAVE_CMD
    OUTB_PIC VECTOR_SLAVE_BASE, PIC_SLAVE_IMR
    OUTB_PIC PIC_CASCADE_IR, PIC_SLAVE_IMR
    OUTB_PIC PIC_ICW4_8086, PIC_SLAVE_IMR
    mov $100, %edi
    call delay_us
    mov pic_cached_mask, %eax
    out %al, $PIC_MASTER_IMR
    mov %ah, %al
    out %al, $PIC_SLAVE_IMR
    ret

/* pic_unmask(%edi = IRQ), pic_mask(%edi = IRQ): Linux's enable_8259A_irq and
 * disable_8259A_irq: update the cached mask and write the chip that has the IRQ.
 * Clobber %rax, %rcx. */
pic_unmask:
    mov %edi, %ecx
    mov $1, %eax
    shl %cl, %eax
    not %eax
    and %eax, pic_cached_mask
    jmp write_imr
pic_mask:
    mov %edi, %ecx
    mov $1, %eax
    shl %cl, %eax
    or %eax, pic_cached_mask
write_imr:
    mov pic_cached_mask, %eax
    cmp $8, %edi
    jae .Lwrite_slave_imr
    out %al, $PIC_MASTER_IMR
    ret
.Lwrite_slave_imr:
    mov %ah, %al
    out %al, $PIC_SLAVE_IMR
    ret

/*
 * local_apic_virtual_wire: the local APIC software-enabled with LINT0 in ExtINT mode and
 * LINT1 as NMI: the MP specification's virtual wire mode, which BIOSes (SeaBIOS's
 * smp_setup) leave for the OS and which Linux expects to find. At reset the SDM has every
 * LVT entry masked, so the 8259's interrupts do not reach a CPU whose APIC is enabled in
 * IA32_APIC_BASE, as it is at reset. QEMU starts so (since its commit "target-i386:
 * disable LINT0 after reset", 2016); KVM starts the bootstrap processor's LINT0 in ExtINT
 * mode, as a BIOS would leave it. Clobbers %rax, %rcx, %rdx, %rsi, %rdi, %r8-%r10.
 */
local_apic_virtual_wire:
    mov $boot_pml4, %edi
    mov $LAPIC_BASE, %esi
    mov $LAPIC_BASE + PTE_P + PTE_RW + PTE_PWT + PTE_PCD, %edx
    mov $PT_LEVEL_4K, %ecx
    call map_page
    mov $LAPIC_BASE, %eax
    movl $LAPIC_SVR_ENABLED_SPURIOUS_FF, LAPIC_SVR(%rax)
    movl $LAPIC_DM_EXTINT, LAPIC_LVT_LINT0(%rax)
    movl $LAPIC_DM_NMI, LAPIC_LVT_LINT1(%rax)
    ret

/* wait_for_request(%edi = master IRQ, %rsi = TSC deadline): polls the master's IRR, with
 * IF clear, until the IRQ is requested; returns 1 if it was before the deadline, else 0.
 * Clobbers %rcx, %rdx, %r8. */
wait_for_request:
    mov %edi, %ecx
    mov $1, %r8d
    shl %cl, %r8d
    mov $PIC_OCW3_READ_IRR, %al
    out %al, $PIC_MASTER_CMD
.Lpoll_irr:
    in $PIC_MASTER_CMD, %al
    test %r8b, %al
    jnz .Lrequested
    call read_tsc
    cmp %rsi, %rax
    jb .Lpoll_irr
    xor %eax, %eax
    ret
.Lrequested:
    mov $1, %eax
    ret

/*
 * wait_for_count(%rdi = counter, %rsi = target, %rdx = TSC deadline, %ecx = 1 to halt
 * between looks, 0 to spin): with interrupts on, waits until the counter an IRQ handler
 * increments reaches the target or the deadline passes. Returns the count, at most the
 * target, with IF clear. Clobbers %rdx, %r8.
 *
 * Halting needs an interrupt to end each HLT: IRQ 0 once it is known to arrive (it wakes
 * the CPU every millisecond, and the deadline is looked at after each wake-up). The counter
 * is read with IF clear and STI's one-instruction shadow covers the HLT, so an interrupt
 * that comes after the read still ends the HLT instead of being taken before it. Spinning
 * keeps IF set throughout, so an interrupt can be taken at any instruction boundary.
 */
wait_for_count:
    mov %rdx, %r8
    jecxz .Lspin_wait
.Lhalt:
    cli
    mov (%rdi), %rax
    cmp %rsi, %rax
    jae .Lreached
    call read_tsc
    cmp %r8, %rax
    jae .Lgave_up
    sti
    hlt
    jmp .Lhalt
.Lspin_wait:
    sti
.Lspin_look:
    mov (%rdi), %rax
    cmp %rsi, %rax
    jae .Lreached
    call read_tsc
    cmp %r8, %rax
    jb .Lspin_look
.Lgave_up:
    cli
    mov (%rdi), %rax
    ret
.Lreached:
    cli
    mov %rsi, %rax
    ret

/* ---------------------------------------------------------------- interrupt entry */

/* install_irq_gates: a 48-gate IDT: traps.s's exception gates, then vectors 0x20-0x2f to
 * the stubs below. Clobbers %rax, %rcx, %rdx, %rsi, %rdi. */
install_irq_gates:
    sub $16, %rsp
    sidt (%rsp)
    mov 2(%rsp), %rsi
    add $16, %rsp
    mov $irq_idt, %edi
    mov $EXCEPTION_VECTORS * GATE_SIZE / 8, %ecx
.Lcopy_gate_quad:
    mov (%rsi), %rax
    mov %rax, (%rdi)
    add $8, %rsi
    add $8, %rdi
    loop .Lcopy_gate_quad
    lea irq_stubs(%rip), %rax
    mov $IRQ_VECTORS, %ecx
.Lfill_irq_gate:
    mov %rax, %rdx
    mov %dx, (%rdi)                     /* offset 15:0 */
    movw $SEL_CODE64, 2(%rdi)
    movw $GATE_INTERRUPT64, 4(%rdi)
    shr $16, %rdx
    mov %dx, 6(%rdi)                    /* offset 31:16 */
    shr $16, %rdx
    mov %edx, 8(%rdi)                   /* offset 63:32 */
    movl $0, 12(%rdi)
    add $IRQ_STUB_SIZE, %rax
    add $GATE_SIZE, %rdi
    loop .Lfill_irq_gate
    lidt irq_idt_descriptor(%rip)
    ret

/* One stub per IRQ, IRQ_STUB_SIZE bytes apart (install_irq_gates relies on that; .org fails
 * the assembly if a stub outgrows its slot): each pushes its IRQ number. */
    .balign IRQ_STUB_SIZE
irq_stubs:
    .set irq, 0
    .rept IRQ_VECTORS
    .org irq_stubs + irq * IRQ_STUB_SIZE
    pushq $irq
    jmp irq_entry
    .set irq, irq + 1
    .endr
    .org irq_stubs + IRQ_VECTORS * IRQ_STUB_SIZE

/* irq_entry: saves what the handlers may clobber, calls the IRQ's handler, then sends a
 * non-specific EOI to the slave (for its IRQs) and to the master, and returns. */
irq_entry:
    push %rax
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %r8
    push %r9
    push %r10
    push %r11
    mov 9 * 8(%rsp), %rax               /* the IRQ the stub pushed */
    lea irq_handlers(%rip), %rcx
    call *(%rcx, %rax, 8)
    mov $PIC_EOI, %al
    cmpq $8, 9 * 8(%rsp)
    jb .Leoi_master
    out %al, $PIC_SLAVE_CMD
.Leoi_master:
    out %al, $PIC_MASTER_CMD
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rax
    add $8, %rsp                        /* the IRQ number */
    iretq

/* The handlers: called with interrupts off; may clobber %rax, %rcx, %rdx, %rsi, %rdi,
 * %r8-%r11. */

pit_interrupt:
    incq pit_ticks
    call read_tsc
    cmpq $1, pit_ticks
    jne .Lnot_first_tick
    mov %rax, pit_first_tsc
.Lnot_first_tick:
    cmpq $PIT_INTERRUPTS, pit_ticks
    jne .Lnot_last_tick
    mov %rax, pit_last_tsc
.Lnot_last_tick:
    ret

/* Reading register C acknowledges the interrupt: the RTC lowers IRQ 8 and the next flag
 * makes a new edge. */
rtc_interrupt:
    mov $RTC_C, %edi
    call cmos_read
    and $RTC_C_IRQF_PF, %al
    cmp $RTC_C_IRQF_PF, %al
    je .Lflagged
    incq rtc_unflagged
.Lflagged:
    incq rtc_ticks
    ret

/* Reading IIR when it names THRE clears that interrupt; writing THR starts the next byte,
 * whose end raises it again. With nothing left, the handler turns the interrupt off, as
 * Linux's __stop_tx does. A read that finds no interrupt pending is left alone, as Linux's
 * serial8250_handle_irq leaves it. */
uart_interrupt:
    mov $UART_IIR, %dx
    in %dx, %al
    and $UART_IIR_ID, %al
    cmp $UART_IIR_NONE, %al
    je .Luart_handled
    cmp $UART_IIR_THRI, %al
    jne .Luart_other_cause
    mov uart_cursor, %rsi
    movzbl (%rsi), %eax
    test %eax, %eax
    jz .Luart_line_sent
    mov $UART_THR, %dx
    out %al, %dx
    incq uart_cursor
    ret
.Luart_line_sent:
    xor %eax, %eax
    mov $UART_IER, %dx
    out %al, %dx
    movq $1, uart_done
    ret
.Luart_other_cause:
    incq uart_other_iir
.Luart_handled:
    ret

unexpected_interrupt:
    incq unexpected_interrupts
    ret

/* ---------------------------------------------------------------- the checks */

/* check_pit_irq0: PIT channel 0 at 1000 Hz on IRQ 0; counts PIT_INTERRUPTS of them in the
 * HLT loop and times them. Returns 1 if they all came, so that IRQ 0 can end later HLTs,
 * else 0. Clobbers %rax, %rcx, %rdx, %rsi, %rdi, %r8-%r11. */
check_pit_irq0:
    push %rbx
    mov $PIT_CH0_RATE_GENERATOR, %al
    out %al, $PIT_MODE
    mov $PIT_LATCH_1000HZ & 0xff, %al
    out %al, $PIT_CH0
    mov $PIT_LATCH_1000HZ >> 8, %al
    out %al, $PIT_CH0
    mov $IRQ_PIT, %edi
    call pic_unmask

    mov $REQUEST_DEADLINE_MS, %edi
    call deadline_ms
    mov %rax, %rsi
    mov $IRQ_PIT, %edi
    call wait_for_request
    mov %eax, %ebx
    lea irq0_request_label(%rip), %rdi
    mov %rbx, %rsi
    mov $1, %edx
    call check_equal
    test %ebx, %ebx
    jz .Lpit_done

    /* The first interrupt is waited for without HLT: should the CPU not take the request
     * the PIC holds, a HLT would never end. */
    mov $REQUEST_DEADLINE_MS, %edi
    call deadline_ms
    mov %rax, %rdx
    mov $pit_ticks, %edi
    mov $1, %esi
    xor %ecx, %ecx
    call wait_for_count
    mov %rax, %rbx
    test %rax, %rax
    jz .Lpit_counted
    mov $WAIT_DEADLINE_MS, %edi
    call deadline_ms
    mov %rax, %rdx
    mov $pit_ticks, %edi
    mov $PIT_INTERRUPTS, %esi
    mov $1, %ecx
    call wait_for_count
    mov %rax, %rbx
.Lpit_counted:
    lea irq0_count_label(%rip), %rdi
    mov %rbx, %rsi
    mov $PIT_INTERRUPTS, %edx
    call check_equal
    cmp $PIT_INTERRUPTS, %rbx
    jne .Lpit_failed

    mov pit_last_tsc, %r9
    sub pit_first_tsc, %r9
    xor %esi, %esi
    mov $SPAN_MIN_MS, %edi
    call tsc_ticks_ms
    cmp %rax, %r9
    jb .Lspan_judged
    mov $SPAN_MAX_MS, %edi
    call tsc_ticks_ms
    cmp %rax, %r9
    ja .Lspan_judged
    mov $1, %esi
.Lspan_judged:
    lea irq0_span_label(%rip), %rdi
    mov $1, %edx
    call check_equal
    mov $1, %ebx
    jmp .Lpit_done
.Lpit_failed:
    xor %ebx, %ebx
.Lpit_done:
    mov %ebx, %eax
    pop %rbx
    ret

/* cmos_read(%edi = index): the CMOS byte, in %al (zero-extended to %eax). cmos_write(%edi =
 * index, %esi = value). Both clobber %rax. */
cmos_read:
    mov %edi, %eax
    out %al, $CMOS_INDEX
    in $CMOS_DATA, %al
    movzbl %al, %eax
    ret
cmos_write:
    mov %edi, %eax
    out %al, $CMOS_INDEX
    mov %esi, %eax
    out %al, $CMOS_DATA
    ret

/* rtc_update_in_progress: ZF clear if register A's UIP is set. Clobbers %rax, %rdi. */
rtc_update_in_progress:
    mov $RTC_A, %edi
    call cmos_read
    test $RTC_A_UIP, %al
    ret

/*
 * read_rtc_time: Linux's mc146818_avoid_UIP with mc146818_get_time's callback: the seconds,
 * then UIP (if set, wait 100 us and start over), the seconds again, the other fields and
 * register B, UIP again and the seconds again; a change anywhere starts over. Fills
 * rtc_time and rtc_control; returns 1 if a read got through within RTC_READ_TRIES, else 0.
 * Clobbers %rax, %rcx, %rdx, %rsi, %rdi.
 */
read_rtc_time:
    push %rbx
    push %r12
    mov $RTC_READ_TRIES, %r12d
.Lrtc_try:
    dec %r12d
    js .Lrtc_gave_up
    mov $RTC_SECONDS, %edi
    call cmos_read
    mov %eax, %ebx
    call rtc_update_in_progress
    jnz .Lrtc_updating
    call rtc_seconds_changed
    jne .Lrtc_try
    mov %bl, rtc_time
    mov $1, %ecx
.Lrtc_read_field:
    lea (%rcx, %rcx, 2), %rdx
    lea rtc_fields(%rip), %rax
    movzbl (%rax, %rdx), %edi
    call cmos_read
    mov %al, rtc_time(%rcx)
    inc %ecx
    cmp $RTC_FIELD_COUNT, %ecx
    jb .Lrtc_read_field
    mov $RTC_B, %edi
    call cmos_read
    mov %al, rtc_control
    call rtc_update_in_progress
    jnz .Lrtc_updating
    call rtc_seconds_changed
    jne .Lrtc_try
    mov $1, %eax
    jmp .Lrtc_read_done
.Lrtc_updating:
    mov $UIP_RECHECK_US, %edi
    call delay_us
    jmp .Lrtc_try
.Lrtc_gave_up:
    xor %eax, %eax
.Lrtc_read_done:
    pop %r12
    pop %rbx
    ret

/* rtc_seconds_changed: compares the seconds register with %bl; ZF clear if it changed.
 * Clobbers %rax, %rdi. */
rtc_seconds_changed:
    mov $RTC_SECONDS, %edi
    call cmos_read
    cmp %bl, %al
    ret

/*
 * rtc_invalid_fields: how many of rtc_time's fields are not valid for rtc_control's format
 * (BCD digits above 9, or a value out of its range; in 12-hour mode the hours are 1-12
 * with bit 7 for PM), in %rax. Clobbers %rcx, %rdx, %rsi, %rdi, %r8-%r10.
 */
rtc_invalid_fields:
    xor %r8d, %r8d                      /* invalid fields */
    xor %ecx, %ecx
.Lrtc_validate_field:
    lea (%rcx, %rcx, 2), %rdx
    lea rtc_fields(%rip), %rax
    movzbl 1(%rax, %rdx), %r9d          /* lowest */
    movzbl 2(%rax, %rdx), %r10d         /* highest */
    movzbl rtc_time(%rcx), %esi
    cmp $RTC_HOURS_FIELD, %ecx
    jne .Lrtc_decode
    testb $RTC_B_24H, rtc_control
    jnz .Lrtc_decode
    and $~RTC_HOUR_PM & 0xff, %esi
    mov $1, %r9d
    mov $12, %r10d
.Lrtc_decode:
    testb $RTC_B_BINARY, rtc_control
    jnz .Lrtc_range
    mov %esi, %eax                      /* BCD: two digits, 0-9 each */
    and $0x0f, %eax
    cmp $9, %eax
    ja .Lrtc_invalid
    mov %esi, %edi
    shr $4, %edi
    cmp $9, %edi
    ja .Lrtc_invalid
    imul $10, %edi, %esi
    add %eax, %esi
.Lrtc_range:
    cmp %r9d, %esi
    jb .Lrtc_invalid
    cmp %r10d, %esi
    jbe .Lrtc_field_done
.Lrtc_invalid:
    inc %r8d
.Lrtc_field_done:
    inc %ecx
    cmp $RTC_FIELD_COUNT, %ecx
    jb .Lrtc_validate_field
    mov %r8, %rax
    ret

/* check_rtc_time: reads the time and checks it can be trusted, without printing it (it
 * differs between runs). Clobbers %rax, %rcx, %rdx, %rsi, %rdi, %r8-%r10. */
check_rtc_time:
    push %rbx
    call read_rtc_time
    mov %eax, %ebx
    lea rtc_settled_label(%rip), %rdi
    mov %rbx, %rsi
    mov $1, %edx
    call check_equal
    test %ebx, %ebx
    jz .Lrtc_time_done
    call rtc_invalid_fields
    lea rtc_invalid_label(%rip), %rdi
    mov %rax, %rsi
    xor %edx, %edx
    call check_equal
.Lrtc_time_done:
    pop %rbx
    ret

/* check_rtc_irq8: the periodic interrupt at 1024 Hz (register A rate 6, register B PIE) on
 * IRQ 8, with the cascade (IRQ 2) unmasked on the master; RTC_INTERRUPTS of them, then PIE
 * off and both masked again. Register C is read before and after to drop stale flags, as
 * Linux's cmos_irq_enable does. Clobbers %rax, %rcx, %rdx, %rsi, %rdi, %r8. */
check_rtc_irq8:
    push %rbx
    mov $RTC_C, %edi
    call cmos_read
    mov $RTC_A, %edi
    mov $RTC_A_1024HZ, %esi
    call cmos_write
    mov $RTC_B, %edi
    call cmos_read
    or $RTC_B_PIE, %eax
    mov %eax, %esi
    mov $RTC_B, %edi
    call cmos_write
    mov $PIC_CASCADE_IR, %edi
    call pic_unmask
    mov $IRQ_RTC, %edi
    call pic_unmask

    mov $WAIT_DEADLINE_MS, %edi
    call deadline_ms
    mov %rax, %rdx
    mov $rtc_ticks, %edi
    mov $RTC_INTERRUPTS, %esi
    mov $1, %ecx
    call wait_for_count
    mov %rax, %rbx

    mov $IRQ_RTC, %edi
    call pic_mask
    mov $PIC_CASCADE_IR, %edi
    call pic_mask
    mov $RTC_B, %edi
    call cmos_read
    and $~RTC_B_PIE & 0xff, %eax
    mov %eax, %esi
    mov $RTC_B, %edi
    call cmos_write
    mov $RTC_C, %edi
    call cmos_read

    lea irq8_count_label(%rip), %rdi
    mov %rbx, %rsi
    mov $RTC_INTERRUPTS, %edx
    call check_equal
    lea irq8_flags_label(%rip), %rdi
    mov rtc_unflagged, %rsi
    xor %edx, %edx
    call check_equal
    pop %rbx
    ret

/* check_uart_irq4: sends uart_line one byte per THRE interrupt, after the image's prefix
 * (sent as usual); whatever the interrupts left unsent is then sent as usual too, so the
 * line is whole either way. Clobbers %rax, %rcx, %rdx, %rsi, %rdi, %r8. */
check_uart_irq4:
    push %rbx
    lea image_prefix(%rip), %rdi
    call puts
    mov $UART_MCR_DTR_RTS_OUT2, %al
    mov $UART_MCR, %dx
    out %al, %dx
    mov $IRQ_UART, %edi
    call pic_unmask
    lea uart_line(%rip), %rax
    mov %rax, uart_cursor
    mov $UART_IER_THRI, %al
    mov $UART_IER, %dx
    out %al, %dx
    mov uart_cursor, %rsi               /* the first byte, with the interrupt on */
    movzbl (%rsi), %eax
    mov $UART_THR, %dx
    out %al, %dx
    incq uart_cursor

    mov $WAIT_DEADLINE_MS, %edi
    call deadline_ms
    mov %rax, %rdx
    mov $uart_done, %edi
    mov $1, %esi
    mov $1, %ecx
    call wait_for_count

    xor %eax, %eax
    mov $UART_IER, %dx
    out %al, %dx
    mov $IRQ_UART, %edi
    call pic_mask
    mov uart_cursor, %rdi
    xor %ebx, %ebx
.Lcount_unsent:
    cmpb $0, (%rdi, %rbx)
    je .Lcounted_unsent
    inc %ebx
    jmp .Lcount_unsent
.Lcounted_unsent:
    call puts
    lea uart_unsent_label(%rip), %rdi
    mov %rbx, %rsi
    xor %edx, %edx
    call check_equal
    lea uart_iir_label(%rip), %rdi
    mov uart_other_iir, %rsi
    xor %edx, %edx
    call check_equal
    pop %rbx
    ret

    .section .note.GNU-stack, "", @progbits
