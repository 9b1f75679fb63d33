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
        ViewNpyError::NonNativeEndian => {
            format!("wrong dtype: expected {want}, the file holds big-endian data")
        }
        ViewNpyError::LengthOverflow => {
            "the header's shape has more elements than can be addressed".to_string()
        }
        other => format!("not a valid .npy file: {other}"),
    };
    // Header parse errors quote the header over several lines: keep messages on one line.
    let message = message.split_whitespace().collect::<Vec<_>>().join(" ");
    Error::format(path, message)
}

/// Reads a `.npy` file of element type `T`. A file of another dtype, a truncated or malformed
/// file, or a header whose size does not match the data is an [`Error::Format`].
pub fn read<T: NpyElement>(path: impl AsRef<Path>) -> Result<Tensor<T>> {
    let path = path.as_ref();
    let (buf, len) = read_aligned(path)?;
    parse_aligned(&bytemuck::cast_slice(&buf)[..len], path)
}

/// Parses the bytes of a `.npy` file of element type `T`, with the same checks and errors as
/// [`read`]; `path_for_errors` names the source in messages. The bytes need no particular
/// alignment (they are copied to an aligned buffer when necessary).
pub fn read_bytes<T: NpyElement>(bytes: &[u8], path_for_errors: &Path) -> Result<Tensor<T>> {
    if (bytes.as_ptr() as usize).is_multiple_of(std::mem::align_of::<u64>()) {
        return parse_aligned(bytes, path_for_errors);
    }
    let mut buf = vec![0u64; bytes.len().div_ceil(8)];
    let aligned: &mut [u8] = &mut bytemuck::cast_slice_mut(&mut buf)[..bytes.len()];
    aligned.copy_from_slice(bytes);
    parse_aligned(aligned, path_for_errors)
}

/// Largest header accepted, as `numpy.load`'s default `max_header_size`.
const MAX_HEADER_LEN: usize = 10_000;

/// Checks the preamble and header before the header parser sees them:
/// * the declared header length must fit in the bytes present (the parser would otherwise
///   allocate it, up to 4 GiB, before noticing the file is too short) and be at most
///   [`MAX_HEADER_LEN`];
/// * the header must not nest brackets: the parser backtracks exponentially on nested
///   `{`/`(`/`[` (a 200-byte header can take hours), and headers of the plain arrays squint
///   reads never nest.
fn check_header(bytes: &[u8], path: &Path) -> Result<()> {
    const MAGIC: &[u8] = b"\x93NUMPY";
    if bytes.len() < MAGIC.len() + 2 || &bytes[..MAGIC.len()] != MAGIC {
        return Err(Error::format(
            path,
            "not a valid .npy file: missing the \\x93NUMPY magic string",
        ));
    }
    let (len_field, header_len) = match bytes[MAGIC.len()] {
        1 => (
            2,
            bytes
                .get(8..10)
                .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize),
        ),
        2 | 3 => (
            4,
            bytes
                .get(8..12)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize),
        ),
        v => {
            return Err(Error::format(
                path,
                format!("not a valid .npy file: unsupported format version {v}"),
            ))
        }
    };
    let start = 8 + len_field;
    let header = match header_len {
        Some(h) if start + h <= bytes.len() => &bytes[start..start + h],
        _ => {
            return Err(Error::format(
                path,
                "truncated: the file ends inside its .npy header",
            ))
        }
    };
    if header.len() > MAX_HEADER_LEN {
        return Err(Error::format(
            path,
            format!(
                "not a valid .npy file: the header is {} bytes, more than numpy.load accepts \
                 ({MAX_HEADER_LEN})",
                header.len()
            ),
        ));
    }
    let count = |c: u8| header.iter().filter(|&&b| b == c).count();
    if count(b'{') > 1 || count(b'(') > 1 || count(b'[') > 0 {
        return Err(Error::format(
            path,
            "not a valid .npy file: the header has nested brackets or a list (structured \
             dtype); squint reads plain float32, uint8, int8 and int32 arrays",
        ));
    }
    Ok(())
}

/// Parses `.npy` bytes that start at an 8-byte-aligned address.
fn parse_aligned<T: NpyElement>(bytes: &[u8], path: &Path) -> Result<Tensor<T>> {
    check_header(bytes, path)?;
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
