//! `.npy` files (NumPy format): f32, u8, i8 and i32 arrays, little-endian, C or Fortran order.

use super::{read_aligned, write_atomic};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use ndarray::{ArrayD, ArrayViewD, IxDyn};
use ndarray_npy::{ViewElement, ViewNpyError, ViewNpyExt, WritableElement, WriteNpyExt};
use std::path::Path;

/// Element types squint reads and writes in `.npy` files.
pub trait NpyElement: ViewElement + WritableElement + Copy + 'static {
    /// NumPy's name of the dtype, for messages.
    const NUMPY_NAME: &'static str;
}
impl NpyElement for f32 {
    const NUMPY_NAME: &'static str = "float32 ('<f4')";
}
impl NpyElement for u8 {
    const NUMPY_NAME: &'static str = "uint8 ('|u1')";
}
impl NpyElement for i8 {
    const NUMPY_NAME: &'static str = "int8 ('|i1')";
}
impl NpyElement for i32 {
    const NUMPY_NAME: &'static str = "int32 ('<i4')";
}

fn describe(path: &Path, e: ViewNpyError, want: &str) -> Error {
    let message = match e {
        ViewNpyError::WrongDescriptor(d) => {
            format!("wrong dtype: expected {want}, the file holds {d}")
        }
        ViewNpyError::WrongNdim(want_nd, got) => {
            format!("wrong number of dimensions: expected {want_nd:?}, got {got}")
        }
        ViewNpyError::MissingBytes(n) => {
            format!("truncated: the header describes {n} more bytes than the file holds")
        }
        ViewNpyError::ExtraBytes(n) => format!("{n} unexpected bytes after the array data"),
        other => format!("not a valid .npy file: {other}"),
    };
    Error::format(path, message)
}

/// Reads a `.npy` file of element type `T`. A file of another dtype, a truncated or malformed
/// file, or a header whose size does not match the data is an [`Error::Format`].
pub fn read<T: NpyElement>(path: impl AsRef<Path>) -> Result<Tensor<T>> {
    let path = path.as_ref();
    let (buf, len) = read_aligned(path)?;
    let bytes: &[u8] = &bytemuck::cast_slice(&buf)[..len];
    let view: ArrayViewD<'_, T> =
        ArrayViewD::view_npy(bytes).map_err(|e| describe(path, e, T::NUMPY_NAME))?;
    let dims = view.shape().to_vec();
    let data: Vec<T> = view.iter().copied().collect();
    Tensor::new(dims, data).map_err(|e| Error::format(path, e.to_string()))
}

/// Reads a `.npy` file and checks its shape against `dims`.
pub fn read_expect<T: NpyElement>(path: impl AsRef<Path>, dims: &[usize]) -> Result<Tensor<T>> {
    let path = path.as_ref();
    let t = read::<T>(path)?;
    if t.dims != dims {
        return Err(Error::format(
            path,
            format!("wrong shape: expected {dims:?}, got {:?}", t.dims),
        ));
    }
    Ok(t)
}

/// Writes a tensor as `.npy` (C order), atomically.
pub fn write<T: NpyElement>(path: impl AsRef<Path>, t: &Tensor<T>) -> Result<()> {
    let path = path.as_ref();
    let arr = ArrayD::from_shape_vec(IxDyn(&t.dims), t.data.clone())
        .map_err(|e| Error::Shape(e.to_string()))?;
    let mut bytes = Vec::new();
    arr.write_npy(&mut bytes)
        .map_err(|e| Error::format(path, format!("cannot encode .npy: {e}")))?;
    write_atomic(path, &bytes)
}
