//! File I/O: `.npy` arrays, `.safetensors` tensors, ONNX models, and atomic writes.
//!
//! Readers never trust a header: sizes are checked against the bytes actually present before
//! anything is allocated, and every failure is an [`crate::Error::Format`] naming the file.
//! Writers go through a temporary file in the same directory that is renamed only on success,
//! so an error never leaves a half-written output behind.

pub mod npy;
pub mod onnx;
pub mod onnx_qdq;
pub mod safetensors;

use crate::error::{Error, Result};
use std::path::Path;

/// Source of unique temporary-file names within this process.
static TMP_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

thread_local! {
    /// Testing hook: make this thread's next `write_atomic` fail just before its rename.
    static FAIL_NEXT_RENAME: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Makes the next [`write_atomic`] on the calling thread fail after writing its temporary
/// file and before renaming it (a full disk or a vanished directory would fail there). For
/// testing that a failed write leaves the previous output intact and no temporary file.
#[doc(hidden)]
pub fn fail_next_rename_on_this_thread() {
    FAIL_NEXT_RENAME.with(|f| f.set(true));
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, renamed on success. The
/// temporary name is unique to the process and the call (and created exclusively), so
/// concurrent writes of one path from several threads or processes never mix their bytes:
/// the last rename wins whole.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::sync::atomic::Ordering;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| Error::format(path, "output path has no file name"))?;
    let (tmp, mut f) = {
        let mut tries = 0;
        loop {
            let tmp = dir.join(format!(
                ".{}.tmp-{}-{}",
                name.to_string_lossy(),
                std::process::id(),
                TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
            {
                Ok(f) => break (tmp, f),
                // A leftover of a crashed process that had the same id: pick another name.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && tries < 16 => tries += 1,
                Err(e) => return Err(Error::io(path, e)),
            }
        }
    };
    let result = (|| {
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        if FAIL_NEXT_RENAME.with(|f| f.replace(false)) {
            return Err(std::io::Error::other("injected failure before the rename"));
        }
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
