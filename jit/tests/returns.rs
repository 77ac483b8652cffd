//! A return goes where the return address on the guest's stack says, whatever the return
//! stack of generated code remembers of the call: also when the callee changed that address,
//! or the code at it.

mod common;

use std::sync::Arc;

use umbra_cpu::backend::emu::EmuOptions;
use umbra_jit::JitFactory;
use umbra_mmu::addr::Gpa;

#[test]
fn a_return_follows_its_return_address_and_the_code_there() {
    let memslots = common::memory(0x30, 0x2000);
    #[rustfmt::skip]
    let caller = [
        0x31, 0xdb,                   // xor ebx, ebx
        0xb9, 0x64, 0x00, 0x00, 0x00, // mov ecx, 100
        0xe8, 0xf4, 0x00, 0x00, 0x00, // 1: call skip_on_odd
        0x83, 0xc3, 0x01,             // add ebx, 1
        0xff, 0xc9,                   // dec ecx
        0x75, 0xf4,                   // jnz 1b
        0xb9, 0x03, 0x00, 0x00, 0x00, // mov ecx, 3
        0xe8, 0x63, 0x01, 0x00, 0x00, // 2: call rewrite_on_one
        0x83, 0xc3, 0x01,             // r: add ebx, 1
        0xff, 0xc9,                   // dec ecx
        0x75, 0xf4,                   // jnz 2b
        0xf4,                         // hlt
    ];
    #[rustfmt::skip]
    let skip_on_odd = [
        0xf6, 0xc1, 0x01,             // test cl, 1
        0x74, 0x05,                   // jz 1f
        0x48, 0x83, 0x04, 0x24, 0x03, // add qword [rsp], 3 (past the ADD)
        0xc3,                         // 1: ret
    ];
    #[rustfmt::skip]
    let rewrite_on_one = [
        0x83, 0xf9, 0x01,                               // cmp ecx, 1
        0x75, 0x08,                                     // jne 1f
        0xc6, 0x04, 0x25, 0x1f, 0x10, 0x00, 0x00, 0x10, // mov byte [r + 2], 16
        0xc3,                                           // 1: ret
    ];
    memslots.write(Gpa(0x1000), &caller).unwrap();
    memslots.write(Gpa(0x1100), &skip_on_odd).unwrap();
    memslots.write(Gpa(0x1180), &rewrite_on_one).unwrap();
    let emu = EmuOptions {
        engine: Some(Arc::new(JitFactory { threshold: 0 })),
        ..EmuOptions::default()
    };
    let mut vcpu = common::vcpu(&emu, &memslots, 0x1000, [0; 16]);
    common::run_to_halt(&mut *vcpu, 100);
    assert_eq!(
        vcpu.registers().unwrap().gpr[3],
        50 + 1 + 1 + 16,
        "the ADD after the first call skipped for odd ECX, the one after the second rewritten \
         to add 16 before the last return"
    );
}
