//! File I/O: `.npy`, `.safetensors`, golden cases.
