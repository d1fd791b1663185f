//! Kernel generators, one file per kernel family. Each defines Cranelift functions with the uniform
//! ABI of [`crate::jit::KernelFn`] and documents its argument order.

pub mod elementwise;
pub mod gemm;
pub mod int;
pub mod loops;
pub mod region;
pub mod rows;
