//! `.safetensors` files: float state_dicts from PyTorch and squint's quantized models.
//!
//! PyTorch writes these with `safetensors.torch.save_file(model.state_dict(), path)`; keys are
//! the state_dict names (`conv1.weight`, `conv1.bias`).

use super::{read_aligned, write_atomic};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// One tensor of a safetensors file, with its raw little-endian bytes.
#[derive(Debug, Clone, PartialEq)]
pub enum StTensor {
    /// float32
    F32(Tensor<f32>),
    /// int8
    I8(Tensor<i8>),
    /// uint8
    U8(Tensor<u8>),
    /// int32
    I32(Tensor<i32>),
}

impl StTensor {
    /// The dims.
    pub fn dims(&self) -> &[usize] {
        match self {
            StTensor::F32(t) => &t.dims,
            StTensor::I8(t) => &t.dims,
            StTensor::U8(t) => &t.dims,
            StTensor::I32(t) => &t.dims,
        }
    }

    fn dtype_name(&self) -> &'static str {
        match self {
            StTensor::F32(_) => "F32",
            StTensor::I8(_) => "I8",
            StTensor::U8(_) => "U8",
            StTensor::I32(_) => "I32",
        }
    }
}

/// The tensors and `__metadata__` of a safetensors file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StFile {
    /// Tensors by name.
    pub tensors: BTreeMap<String, StTensor>,
    /// String metadata (`__metadata__`).
    pub metadata: BTreeMap<String, String>,
}

fn le_vec<T: bytemuck::Pod>(data: &[u8]) -> Vec<T> {
    // safetensors data is little-endian; this crate targets little-endian hosts.
    data.chunks_exact(std::mem::size_of::<T>())
        .map(bytemuck::pod_read_unaligned)
        .collect()
}

impl StFile {
    /// Reads a safetensors file. F32, I8, U8 and I32 tensors are supported; F64 tensors are
    /// converted to f32; any other dtype is a clear error naming the tensor.
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let (buf, len) = read_aligned(path)?;
        Self::from_bytes(&bytemuck::cast_slice(&buf)[..len], path)
    }

    /// Parses the bytes of a safetensors file, with the same checks and errors as
    /// [`Self::read`]; `path_for_errors` names the source in messages.
    pub fn from_bytes(bytes: &[u8], path_for_errors: &Path) -> Result<Self> {
        let path = path_for_errors;
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| Error::format(path, format!("not a valid .safetensors file: {e}")))?;
        let (_, meta) = SafeTensors::read_metadata(bytes)
            .map_err(|e| Error::format(path, format!("not a valid .safetensors file: {e}")))?;
        let mut out = StFile::default();
        if let Some(m) = meta.metadata() {
            out.metadata = m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        }
        for (name, view) in st.iter() {
            let dims = view.shape().to_vec();
            let d = view.data();
            let wrap = |e: Error| Error::format(path, format!("tensor '{name}': {e}"));
            let t = match view.dtype() {
                Dtype::F32 => StTensor::F32(Tensor::new(dims, le_vec(d)).map_err(wrap)?),
                Dtype::F64 => StTensor::F32(
                    Tensor::new(dims, le_vec::<f64>(d).iter().map(|&v| v as f32).collect())
                        .map_err(wrap)?,
                ),
                Dtype::I8 => StTensor::I8(Tensor::new(dims, le_vec(d)).map_err(wrap)?),
                Dtype::U8 => StTensor::U8(Tensor::new(dims, d.to_vec()).map_err(wrap)?),
                Dtype::I32 => StTensor::I32(Tensor::new(dims, le_vec(d)).map_err(wrap)?),
                other => {
                    return Err(Error::format(
                        path,
                        format!(
                            "tensor '{name}' has dtype {other:?}; squint reads F32, F64, I8, U8 and I32 \
                             (convert with `model.float()` before saving)"
                        ),
                    ))
                }
            };
            out.tensors.insert(name.to_string(), t);
        }
        Ok(out)
    }

    /// Writes the file atomically.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let raw: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = self
            .tensors
            .iter()
            .map(|(k, t)| {
                let (dtype, bytes) = match t {
                    StTensor::F32(t) => (Dtype::F32, bytemuck::cast_slice(&t.data).to_vec()),
                    StTensor::I8(t) => (Dtype::I8, bytemuck::cast_slice(&t.data).to_vec()),
                    StTensor::U8(t) => (Dtype::U8, t.data.clone()),
                    StTensor::I32(t) => (Dtype::I32, bytemuck::cast_slice(&t.data).to_vec()),
                };
                (k.clone(), dtype, t.dims().to_vec(), bytes)
            })
            .collect();
        let views = raw
            .iter()
            .map(|(k, dtype, dims, bytes)| {
                TensorView::new(*dtype, dims.clone(), bytes)
                    .map(|v| (k.clone(), v))
                    .map_err(|e| Error::format(path, format!("tensor '{k}': {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let meta: HashMap<String, String> = self.metadata.clone().into_iter().collect();
        let bytes = safetensors::serialize(views, Some(meta))
            .map_err(|e| Error::format(path, format!("cannot encode .safetensors: {e}")))?;
        write_atomic(path, &bytes)
    }

    /// A float32 tensor by name, with a clear error if it is missing or of another dtype.
    pub fn f32(&self, name: &str, path_for_errors: &Path) -> Result<&Tensor<f32>> {
        match self.tensors.get(name) {
            Some(StTensor::F32(t)) => Ok(t),
            Some(other) => Err(Error::format(
                path_for_errors,
                format!("tensor '{name}' is {}, expected F32", other.dtype_name()),
            )),
            None => Err(self.missing(name, path_for_errors)),
        }
    }

    /// An int8 tensor by name.
    pub fn i8(&self, name: &str, path_for_errors: &Path) -> Result<&Tensor<i8>> {
        match self.tensors.get(name) {
            Some(StTensor::I8(t)) => Ok(t),
            Some(other) => Err(Error::format(
                path_for_errors,
                format!("tensor '{name}' is {}, expected I8", other.dtype_name()),
            )),
            None => Err(self.missing(name, path_for_errors)),
        }
    }

    /// An int32 tensor by name.
    pub fn i32(&self, name: &str, path_for_errors: &Path) -> Result<&Tensor<i32>> {
        match self.tensors.get(name) {
            Some(StTensor::I32(t)) => Ok(t),
            Some(other) => Err(Error::format(
                path_for_errors,
                format!("tensor '{name}' is {}, expected I32", other.dtype_name()),
            )),
            None => Err(self.missing(name, path_for_errors)),
        }
    }

    fn missing(&self, name: &str, path: &Path) -> Error {
        let keys: Vec<&str> = self.tensors.keys().map(String::as_str).collect();
        Error::format(
            path,
            format!("no tensor '{name}'; the file has: {}", keys.join(", ")),
        )
    }
}
