//! CPU kernels.
//!
//! [`self::reference`] is the specification: plain loops, exact integer arithmetic, no tricks. Every
//! other path in squint (the GPU kernels, faster CPU code) is tested against it bit for bit.

pub mod fast;
pub mod float_ops;
pub mod reference;
