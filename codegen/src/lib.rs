//! Native code generation for kiln: one Cranelift function per fused kernel, an execution plan over
//! a static arena, and a multi-core executor.

pub mod jit;
pub mod kernels;
pub mod vmath;

#[cfg(test)]
mod math_tests;
