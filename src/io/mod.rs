//! File I/O: `.npy` arrays, `.safetensors` tensors, and atomic writes.
//!
//! Readers never trust a header: sizes are checked against the bytes actually present before
//! anything is allocated, and every failure is an [`crate::Error::Format`] naming the file.
//! Writers go through a temporary file in the same directory that is renamed only on success,
//! so an error never leaves a half-written output behind.

pub mod npy;
pub mod safetensors;

use crate::error::{Error, Result};
use std::path::Path;

/// Writes `bytes` to `path` atomically: a temporary file beside it, renamed on success.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| Error::format(path, "output path has no file name"))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

/// Reads a whole file into an 8-byte-aligned buffer (so typed views of it are aligned).
pub(crate) fn read_aligned(path: &Path) -> Result<(Vec<u64>, usize)> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    let len = usize::try_from(len).map_err(|_| Error::format(path, "file too large"))?;
    let mut buf = vec![0u64; len.div_ceil(8)];
    let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut buf);
    f.read_exact(&mut bytes[..len])
        .map_err(|e| Error::io(path, e))?;
    Ok((buf, len))
}
