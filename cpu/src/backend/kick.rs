//! Asking a running vCPU to return from [`Vcpu::run`](super::Vcpu::run) soon, from another
//! thread: a debugger's interrupt, a user's quit.
//!
//! A [`VcpuKick`] is a flag the vCPU looks at, plus, for a backend that blocks in the kernel
//! (KVM_RUN), the thread to interrupt with a signal. The emulator reads the flag before each
//! instruction (one relaxed load). KVM's documented protocol closes the race between looking
//! at the flag and entering the guest: the signal handler sets the run page's
//! `immediate_exit`, so a kick that lands just before KVM_RUN makes it return at once with
//! EINTR, and one that lands inside it interrupts it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// A handle that makes a vCPU's run return with [`VcpuExit::Interrupted`](super::VcpuExit).
#[derive(Debug, Default)]
pub struct VcpuKick {
    requested: AtomicBool,
    /// The thread inside the backend's blocking run, to signal; `None` outside it.
    blocked: Mutex<Option<libc::pthread_t>>,
}

impl VcpuKick {
    /// A handle with no kick pending.
    pub fn new() -> VcpuKick {
        VcpuKick::default()
    }

    /// Makes the vCPU's current or next run return soon with `Interrupted`.
    pub fn kick(&self) {
        self.requested.store(true, Ordering::SeqCst);
        let blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(thread) = *blocked {
            // SAFETY: `thread` is registered only while it is inside the backend's run (see
            // `enter_blocking`), and it unregisters under this lock before leaving, so it is
            // alive here. The signal's handler was installed before it registered.
            unsafe { libc::pthread_kill(thread, kick_signal()) };
        }
    }

    /// Whether a kick is pending (one relaxed load: the emulator's per-instruction check).
    #[inline]
    pub(crate) fn pending(&self) -> bool {
        self.requested.load(Ordering::Relaxed)
    }

    /// Takes the pending kick, if any.
    pub(crate) fn take(&self) -> bool {
        self.requested.swap(false, Ordering::SeqCst)
    }

    /// Registers the calling thread as blocked in the backend until the guard drops, so that a
    /// kick signals it.
    pub(crate) fn enter_blocking(&self) -> BlockedGuard<'_> {
        install_handler();
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        *self.blocked.lock().unwrap_or_else(|e| e.into_inner()) = Some(me);
        BlockedGuard { kick: self }
    }
}

/// Unregisters the thread [`VcpuKick::enter_blocking`] registered.
pub(crate) struct BlockedGuard<'a> {
    kick: &'a VcpuKick,
}

impl Drop for BlockedGuard<'_> {
    fn drop(&mut self) {
        *self.kick.blocked.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// The signal a kick sends: the first real-time signal, which nothing else in Umbra uses.
pub(crate) fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN()
}

thread_local! {
    /// What the signal handler does on this thread: set by the KVM backend around KVM_RUN to
    /// point at the run page's `immediate_exit`, null elsewhere.
    pub(crate) static IMMEDIATE_EXIT: std::cell::Cell<*mut u8> =
        const { std::cell::Cell::new(std::ptr::null_mut()) };
}

extern "C" fn on_kick_signal(_signal: libc::c_int) {
    // A const-initialized thread local is a plain TLS read, safe in a signal handler.
    let flag = IMMEDIATE_EXIT.with(|flag| flag.get());
    if !flag.is_null() {
        // SAFETY: a non-null pointer is set only while this thread's KVM vCPU is inside
        // `run`, whose run page stays mapped for that whole time.
        unsafe { flag.write_volatile(1) };
    }
}

/// Installs the kick signal's handler once per process. SA_RESTART keeps other system calls
/// the signal interrupts going; KVM_RUN returns EINTR whatever the flags.
fn install_handler() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        // SAFETY: a zeroed sigaction is a valid starting point; the handler is an
        // async-signal-safe extern "C" fn that only touches a thread-local pointer.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_kick_signal as extern "C" fn(libc::c_int) as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(kick_signal(), &action, std::ptr::null_mut());
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kick_is_taken_once() {
        let kick = VcpuKick::new();
        assert!(!kick.pending());
        kick.kick();
        assert!(kick.pending());
        assert!(kick.take());
        assert!(!kick.take());
    }

    #[test]
    fn kicking_a_registered_thread_runs_the_handler_harmlessly() {
        let kick = VcpuKick::new();
        let guard = kick.enter_blocking();
        kick.kick();
        drop(guard);
        assert!(kick.take());
    }
}
