//! A minimal owned n-d array: dims plus a flat C-order vector.
//!
//! Kernels work on flat slices with a validated [`crate::shape::ConvShape`]; this type only
//! carries data between files, the pipeline and the kernels.

use crate::error::{Error, Result};
use crate::shape::checked_numel;

/// An owned C-order tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor<T> {
    /// Dimensions, outermost first.
    pub dims: Vec<usize>,
    /// Elements in C order; `data.len()` is the product of `dims`.
    pub data: Vec<T>,
}

impl<T> Tensor<T> {
    /// Builds a tensor, checking that `data` has `prod(dims)` elements.
    pub fn new(dims: Vec<usize>, data: Vec<T>) -> Result<Self> {
        let n = checked_numel(&dims)?;
        if n != data.len() {
            return Err(Error::Shape(format!(
                "dims {dims:?} need {n} elements, got {}",
                data.len()
            )));
        }
        Ok(Tensor { dims, data })
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The dims as a 4-D shape, or a shape error naming `what`.
    pub fn dims4(&self, what: &str) -> Result<[usize; 4]> {
        <[usize; 4]>::try_from(self.dims.as_slice()).map_err(|_| {
            Error::Shape(format!(
                "{what} must be 4-D (NCHW / OIHW), got shape {:?}",
                self.dims
            ))
        })
    }

    /// Splits axis 0 into `dims[0]` tensors of the remaining dims (e.g. a BNCHW calibration
    /// stack into B NCHW batches).
    pub fn split_axis0(self) -> Result<Vec<Tensor<T>>>
    where
        T: Clone,
    {
        if self.dims.is_empty() {
            return Err(Error::Shape(
                "cannot split a 0-D tensor along axis 0".into(),
            ));
        }
        let inner: Vec<usize> = self.dims[1..].to_vec();
        let step = checked_numel(&inner)?;
        if step == 0 {
            return Err(Error::Shape(format!(
                "shape {:?} has a zero-sized dimension",
                self.dims
            )));
        }
        Ok(self
            .data
            .chunks(step)
            .map(|c| Tensor {
                dims: inner.clone(),
                data: c.to_vec(),
            })
            .collect())
    }
}

/// Checks that `elements` values of `bytes_per_element` bytes each can be allocated on the host
/// before a kernel allocates them, so that a shape too large for memory is an
/// [`Error::DeviceLimit`] naming `what` instead of an allocation failure that aborts the
/// process. (With memory overcommit this can only catch requests larger than the system can
/// ever provide.)
pub fn check_host_alloc(elements: usize, bytes_per_element: usize, what: &str) -> Result<()> {
    let bytes = elements.checked_mul(bytes_per_element).ok_or_else(|| {
        Error::DeviceLimit(format!(
            "{what} needs {elements} x {bytes_per_element} bytes, more than the address space"
        ))
    })?;
    let mut probe: Vec<u8> = Vec::new();
    probe.try_reserve_exact(bytes).map_err(|_| {
        Error::DeviceLimit(format!(
            "{what} needs {bytes} bytes ({:.1} GiB) of host memory, which cannot be allocated",
            bytes as f64 / (1u64 << 30) as f64
        ))
    })
}
