//! The device gate: serialises squint's use of a device on backends that cannot take
//! concurrent calls safely.
//!
//! # Why
//! wgpu's GL backend guards its one GL context with a lock that it waits on for a few seconds
//! and then *panics* ("Could not lock adapter context. This is most-likely a deadlock.",
//! wgpu-hal 30 `gles/egl.rs`). Mesa llvmpipe holds that lock while LLVM compiles a pipeline
//! (seconds with a cold shader cache on a loaded machine) or while it waits for a long
//! dispatch, so two threads using one GL device can panic inside wgpu. The same call is
//! harmless on Vulkan, Metal and DX12.
//!
//! # How
//! Every [`super::GpuContext`] of one adapter shares one [`Gate`]. On a backend that needs it
//! ([`Gate::serial`]), every public operation holds the gate for its whole duration, and so
//! does every drop of a device object (buffers, textures, layers, the device itself), so
//! that squint never waits on wgpu's lock at all: threads queue on the gate instead, without
//! a time limit. The gate is re-entrant (an operation may call another, e.g. a model run
//! calls quantize, conv and dequantize) and cannot be poisoned: a panic releases it while
//! unwinding. On other backends the gate is a no-op.

use std::mem::ManuallyDrop;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::ThreadId;

/// A re-entrant lock around one device's calls (a no-op unless [`Gate::serial`]).
#[derive(Debug)]
pub(crate) struct Gate {
    serial: bool,
    /// The thread inside, and how many times it entered.
    state: Mutex<(Option<ThreadId>, usize)>,
    free: Condvar,
}

impl Gate {
    /// A gate; `serial` makes it exclude other threads (else entering it does nothing).
    pub(crate) fn new(serial: bool) -> Arc<Gate> {
        Arc::new(Gate {
            serial,
            state: Mutex::new((None, 0)),
            free: Condvar::new(),
        })
    }

    /// The gate for a device of `backend`: serial for GL, a no-op elsewhere.
    pub(crate) fn for_backend(backend: wgpu::Backend) -> Arc<Gate> {
        Gate::new(backend == wgpu::Backend::Gl)
    }

    /// Held while an instance or a device is created or destroyed, so that a process never
    /// does two at once: on an NVIDIA H200 (Vulkan, driver 580), threads that each opened,
    /// used and dropped their own devices deadlocked inside the driver in 3 runs of 4; with
    /// this lock, none did.
    pub(crate) fn lifecycle() -> std::sync::MutexGuard<'static, ()> {
        static LIFECYCLE: Mutex<()> = Mutex::new(());
        LIFECYCLE.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the gate excludes other threads.
    pub(crate) fn serial(&self) -> bool {
        self.serial
    }

    /// Enters the gate, waiting while another thread is inside. Re-entrant.
    pub(crate) fn enter(self: &Arc<Self>) -> GateGuard {
        if !self.serial {
            return GateGuard(None);
        }
        let me = std::thread::current().id();
        // The state is two plain values updated in one statement: a poisoned lock still
        // holds a consistent state.
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            match st.0 {
                None => {
                    *st = (Some(me), 1);
                    break;
                }
                Some(t) if t == me => {
                    st.1 += 1;
                    break;
                }
                Some(_) => st = self.free.wait(st).unwrap_or_else(|p| p.into_inner()),
            }
        }
        GateGuard(Some(self.clone()))
    }
}

/// Proof of being inside a [`Gate`]; leaves it when dropped (also while unwinding).
#[must_use = "the gate is left when the guard is dropped"]
#[derive(Debug)]
pub(crate) struct GateGuard(Option<Arc<Gate>>);

impl Drop for GateGuard {
    fn drop(&mut self) {
        if let Some(g) = &self.0 {
            let mut st = g.state.lock().unwrap_or_else(|p| p.into_inner());
            st.1 -= 1;
            if st.1 == 0 {
                st.0 = None;
                g.free.notify_one();
            }
        }
    }
}

/// A value holding device objects, dropped inside its device's gate.
#[derive(Debug)]
pub(crate) struct Gated<T> {
    value: ManuallyDrop<T>,
    gate: Arc<Gate>,
}

impl<T> Gated<T> {
    /// Wraps `value`, to be dropped inside `gate`.
    pub(crate) fn new(value: T, gate: &Arc<Gate>) -> Self {
        Gated {
            value: ManuallyDrop::new(value),
            gate: gate.clone(),
        }
    }
}

impl<T> std::ops::Deref for Gated<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> Drop for Gated<T> {
    fn drop(&mut self) {
        let _inside = self.gate.enter();
        // SAFETY: `value` is dropped exactly once, here, and never used afterwards (`self` is
        // being dropped).
        unsafe { ManuallyDrop::drop(&mut self.value) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn a_serial_gate_admits_one_thread_at_a_time_and_re_enters() {
        let gate = Gate::new(true);
        let inside = AtomicUsize::new(0);
        let max_inside = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..200 {
                        let _a = gate.enter();
                        let _b = gate.enter(); // re-entry does not deadlock
                        let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        max_inside.fetch_max(n, Ordering::SeqCst);
                        std::thread::yield_now();
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(max_inside.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_panic_inside_a_serial_gate_releases_it() {
        let gate = Gate::new(true);
        let g2 = gate.clone();
        let r = std::thread::spawn(move || {
            let _g = g2.enter();
            panic!("inside the gate");
        })
        .join();
        assert!(r.is_err());
        // Another thread gets in (this would wait forever if the gate were still held).
        let g3 = gate.clone();
        std::thread::spawn(move || drop(g3.enter())).join().unwrap();
    }

    #[test]
    fn a_non_serial_gate_lets_threads_in_together() {
        let gate = Gate::new(false);
        let _outer = gate.enter();
        let g2 = gate.clone();
        // Would block forever if the gate excluded other threads.
        std::thread::spawn(move || drop(g2.enter())).join().unwrap();
        assert!(!gate.serial());
    }
}
