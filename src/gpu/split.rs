//! Splitting work to fit the device: [`SplitLimits`] (the binding, dispatch and buffer
//! limits the host code splits by) and [`plan`], which cuts a range of work items into
//! dispatches whose storage windows and workgroup counts fit them. Pure integer logic, no
//! wgpu calls, tested on the CPU.

use crate::error::{Error, Result};

/// Limits the host code splits work by: the device's, or smaller ones forced for testing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SplitLimits {
    /// Largest storage binding window, bytes.
    pub(crate) max_binding: u64,
    /// Largest workgroup count per dispatch dimension.
    pub(crate) max_workgroups: u32,
    /// Storage binding offset alignment, bytes (at least 32, a power of two).
    pub(crate) align: u64,
    /// Largest buffer, bytes.
    pub(crate) max_buffer: u64,
}

impl SplitLimits {
    /// The binding window covering bytes `[lo, hi)`: `(offset, size)`.
    pub(crate) fn window(&self, lo: u64, hi: u64) -> (u64, u64) {
        let offset = lo / self.align * self.align;
        let end = hi.div_ceil(4) * 4;
        (offset, (end - offset).max(4))
    }

    fn fits(&self, lo: u64, hi: u64) -> bool {
        self.window(lo, hi).1 <= self.max_binding
    }

    /// Largest workgroup count of one dispatch (a 2-D grid).
    fn max_groups(&self) -> u64 {
        let d = self.max_workgroups as u64;
        d * d
    }
}

/// Cuts items `[0, total)` into chunks whose storage windows (`ranges(begin, end)` gives the
/// byte range each storage binding needs) fit the binding limit and whose workgroups fit one
/// dispatch (`per_group` items per workgroup). `what` names the operation in errors.
pub(crate) fn plan(
    split: SplitLimits,
    total: u64,
    per_group: u64,
    what: &str,
    ranges: &dyn Fn(u64, u64) -> Vec<(u64, u64)>,
) -> Result<Vec<(u64, u64)>> {
    if total > u32::MAX as u64 {
        return Err(Error::DeviceLimit(format!(
            "{what}: {total} work items exceed the 2^32 item indices of squint's kernels"
        )));
    }
    let cap = split.max_groups() * per_group;
    let mut chunks = Vec::new();
    let mut begin = 0;
    while begin < total {
        let mut n = (total - begin).min(cap);
        loop {
            let r = ranges(begin, begin + n);
            if r.iter().all(|&(lo, hi)| split.fits(lo, hi)) {
                break;
            }
            if n == 1 {
                let need = r
                    .iter()
                    .map(|&(lo, hi)| split.window(lo, hi).1)
                    .max()
                    .unwrap_or(0);
                return Err(Error::DeviceLimit(format!(
                    "{what}: one work item needs a storage binding of {need} bytes, the device \
                     allows {} bytes per binding",
                    split.max_binding
                )));
            }
            n = n.div_ceil(2);
        }
        chunks.push((begin, begin + n));
        begin += n;
    }
    Ok(chunks)
}
