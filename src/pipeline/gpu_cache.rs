//! The GPU layers of a [`QuantizedModel`](super::QuantizedModel): weights and epilogues are
//! uploaded once per device and reused by every run on it.

use super::quantized::QConv;
use crate::error::Result;
use crate::gpu::{GpuContext, GpuConv2d};
use std::sync::{Arc, Mutex};

/// The layers built for one device, keyed by [`GpuContext::id`]. A lost device reopens with a
/// new id, and the layers are rebuilt on it.
#[derive(Default)]
pub(super) struct GpuLayerCache {
    slot: Mutex<Option<(u64, Arc<Vec<GpuConv2d>>)>>,
}

impl GpuLayerCache {
    /// The layers of `convs` on `ctx`: the cached ones if they were built on this device,
    /// else built (and cached) now.
    pub(super) fn layers(&self, ctx: &GpuContext, convs: &[QConv]) -> Result<Arc<Vec<GpuConv2d>>> {
        let mut cache = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((id, layers)) = cache.as_ref() {
            if *id == ctx.id() {
                return Ok(layers.clone());
            }
        }
        let layers = Arc::new(
            convs
                .iter()
                .map(|c| GpuConv2d::new(ctx, c.w_q(), c.w_dims(), c.w_qp(), c.epi(), c.params()))
                .collect::<Result<Vec<_>>>()?,
        );
        *cache = Some((ctx.id(), layers.clone()));
        Ok(layers)
    }

    /// Drops the cached layers (the model's layers changed).
    pub(super) fn clear(&mut self) {
        *self.slot.get_mut().unwrap_or_else(|p| p.into_inner()) = None;
    }
}
