//! Hand-written wide-vector kernels for the fixed row ops (Softmax, LogSoftmax, LayerNorm,
//! RMSNorm, CRMSNorm) and the standalone transcendental ops (Exp, Tanh, Sigmoid, Silu, Erf, Gelu), run as
//! host steps ([`HostKernel`]) with run-time dispatch on the model's [`Isa`]: 256-bit AVX2 + FMA
//! code where the CPU has it (AVX-512 machines use it too for now), portable Rust otherwise.
//!
//! Why not Cranelift: its x64 backend has 128-bit vectors only and re-broadcasts constants inside
//! loops (measurements: docs/benchmarks.md, "Row and elementwise kernels (session 5)"). Fused
//! elementwise chains and GEMM epilogues stay generated.
//!
//! The kernels are written once over eight f32 lanes (`vector::F8`) and instantiated twice:
//! `avx2` (inside `#[target_feature(enable = "avx2,fma")]` functions) and `portable`. The
//! arithmetic follows `vmath` and `kernels::rows` (same polynomials, same centring), so the
//! same tolerances hold.

mod kernels;
mod math;
mod vector;

#[cfg(test)]
pub(crate) mod tests;

pub use kernels::{MapOp, MapPre};

use crate::Isa;
use crate::spatial::HostKernel;

/// A row operation over rows of `n` contiguous f32.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RowOp {
    Softmax,
    LogSoftmax,
    /// Arguments `[out, x, γ]` or `[out, x, γ, β]`, γ and β of `n` values.
    LayerNorm {
        eps: f32,
        bias: bool,
    },
    /// Arguments `[out, x, γ]`.
    RmsNorm {
        eps: f32,
    },
    /// CRMSNorm: rows of n = d − 1 stored components of a zero-mean x ∈ ℝᵈ; arguments `[out, x]`.
    CrmsNorm {
        eps: f32,
        d: usize,
    },
}

/// `op` over `rows` rows of `n` (n ≥ 1); arguments `[out, x, params…]`, each work unit a row.
#[derive(Debug, Clone)]
pub struct RowKernel {
    pub op: RowOp,
    pub n: usize,
    pub rows: usize,
    /// What this CPU supports (already lowered by `Isa::supported`).
    pub isa: Isa,
}

/// Elements per work unit of a [`MapKernel`]: 32 KiB of input, enough to amortise a unit.
const MAP_UNIT: usize = 8192;

/// `op` over `len` contiguous f32; arguments `[out, x]`.
#[derive(Debug, Clone)]
pub struct MapKernel {
    pub op: MapOp,
    pub len: usize,
    pub isa: Isa,
}

impl HostKernel for RowKernel {
    fn describe(&self) -> String {
        format!("{:?} rows of {} ({})", self.op, self.n, self.isa)
    }
    fn units(&self) -> usize {
        self.rows
    }
    fn work(&self) -> usize {
        self.rows * self.n
    }
    // The executor passes the model's ISA; these kernels carry the same value from lowering.
    unsafe fn run(&self, args: &[*mut u8], lo: usize, hi: usize, _isa: Isa) {
        let a = |k: usize| args[k] as *const f32;
        let (y, x, n) = (args[0] as *mut f32, a(1), self.n);
        let params = match self.op {
            RowOp::LayerNorm { bias: true, .. } => (a(2), Some(a(3))),
            RowOp::LayerNorm { bias: false, .. } | RowOp::RmsNorm { .. } => (a(2), None),
            RowOp::Softmax | RowOp::LogSoftmax | RowOp::CrmsNorm { .. } => (std::ptr::null(), None),
        };
        // SAFETY: the plan sized out and x as rows·n f32 and γ, β as n (see the fields); rows
        // [lo, hi) are in range and disjoint from other chunks'; the AVX2 path runs only when the
        // ISA (lowered to what this CPU has when the model was compiled) includes AVX2 and FMA.
        unsafe {
            let (x, y) = (x.add(lo * n), y.add(lo * n));
            #[cfg(target_arch = "x86_64")]
            if self.isa >= Isa::Avx2Fma {
                return avx2::rows(self.op, x, y, n, hi - lo, params);
            }
            portable::rows(self.op, x, y, n, hi - lo, params)
        }
    }
}

impl HostKernel for MapKernel {
    fn describe(&self) -> String {
        format!("{:?} over {} ({})", self.op, self.len, self.isa)
    }
    fn units(&self) -> usize {
        self.len.div_ceil(MAP_UNIT)
    }
    fn work(&self) -> usize {
        // A transcendental costs several simple ops: weigh it so mid-sized maps split.
        self.len * 4
    }
    // The executor passes the model's ISA; these kernels carry the same value from lowering.
    unsafe fn run(&self, args: &[*mut u8], lo: usize, hi: usize, _isa: Isa) {
        let start = lo * MAP_UNIT;
        let end = (hi * MAP_UNIT).min(self.len);
        if start >= end {
            return;
        }
        // SAFETY: out and x hold `len` f32 (plan invariant); units [lo, hi) cover elements
        // [start, end) ⊂ [0, len), disjoint from other chunks'; AVX2 only when the ISA has it.
        unsafe {
            let (x, y) = ((args[1] as *const f32).add(start), (args[0] as *mut f32).add(start));
            #[cfg(target_arch = "x86_64")]
            if self.isa >= Isa::Avx2Fma {
                return avx2::map(self.op, x, y, end - start);
            }
            portable::map(self.op, x, y, end - start)
        }
    }
}

type Params = (*const f32, Option<*const f32>);

macro_rules! instantiate {
    ($V:ty) => {
        /// `op` over `rows` rows of `n`.
        ///
        /// # Safety
        /// `x` readable and `y` writable for rows·n f32, the parameters readable for n.
        #[inline(always)]
        pub(super) unsafe fn rows_impl(op: RowOp, x: *const f32, y: *mut f32, n: usize, rows: usize, p: Params) {
            for r in 0..rows {
                // SAFETY: row r is inside the caller's rows·n elements.
                unsafe {
                    let (x, y) = (x.add(r * n), y.add(r * n));
                    match op {
                        RowOp::Softmax => kernels::softmax_row::<$V>(x, y, n),
                        RowOp::LogSoftmax => kernels::log_softmax_row::<$V>(x, y, n),
                        RowOp::LayerNorm { eps, .. } => kernels::norm_row::<$V>(x, y, n, p.0, p.1, eps, false),
                        RowOp::RmsNorm { eps } => kernels::norm_row::<$V>(x, y, n, p.0, None, eps, true),
                        RowOp::CrmsNorm { eps, d } => kernels::crms_norm_row::<$V>(x, y, n, d, eps),
                    }
                }
            }
        }
    };
}

/// The AVX2 + FMA instantiation.
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use super::vector::Avx2;
    use super::*;

    instantiate!(Avx2);

    /// # Safety
    /// As [`rows_impl`], and the CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn rows(op: RowOp, x: *const f32, y: *mut f32, n: usize, rows: usize, p: Params) {
        // SAFETY: the caller's contract.
        unsafe { rows_impl(op, x, y, n, rows, p) }
    }

    /// # Safety
    /// As [`super::softmax_exp_rows`], and the CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn softmax_exp_rows(s: *mut f32, inv: *mut f32, rows: usize, n: usize, clamp: bool) {
        for r in 0..rows {
            // SAFETY: row r < rows of n floats, and inv[r].
            unsafe { *inv.add(r) = kernels::softmax_exp_row::<Avx2>(s.add(r * n), n, clamp) };
        }
    }

    /// # Safety
    /// `x` readable and `y` writable for `n` f32, and the CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn map(op: MapOp, x: *const f32, y: *mut f32, n: usize) {
        // SAFETY: the caller's contract.
        unsafe { kernels::map::<Avx2>(op, x, y, n) }
    }

    /// # Safety
    /// `x` readable and `y` writable for `n` f32 (y may equal x), and the CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn map_pre(op: MapOp, pre: MapPre, x: *const f32, y: *mut f32, n: usize) {
        // SAFETY: the caller's contract.
        unsafe { kernels::map_pre::<Avx2>(op, pre, x, y, n) }
    }
}

/// Attention's block softmax on the AVX2 kernels (`kernels::softmax_exp_row` per row): e^{x−max}
/// in place over `rows` rows of `n` at `s`, 1/Σ of row r to `inv[r]`. Returns false (nothing
/// done) where the ISA lacks AVX2; the caller then runs the generated kernel.
///
/// # Safety
/// `s` readable and writable for rows·n f32, `inv` writable for `rows`; n ≥ 1.
pub unsafe fn softmax_exp_rows(isa: Isa, s: *mut f32, inv: *mut f32, rows: usize, n: usize, clamp: bool) -> bool {
    #[cfg(target_arch = "x86_64")]
    if isa >= Isa::Avx2Fma {
        // SAFETY: the caller's contract; AVX2 and FMA are present (the Isa was lowered to what
        // this CPU supports).
        unsafe { avx2::softmax_exp_rows(s, inv, rows, n, clamp) };
        return true;
    }
    let _ = (isa, s, inv, rows, n, clamp);
    false
}

/// The signature of [`host_map_entry`]'s functions: `y = op(pre(x))` over `n` floats, `op` a
/// [`MapOp`] as `u32` (`MapOp::code`), `pre` a [`MapPre`] as its four fields (scale, shift, lo,
/// hi; [`MapPre::IDENTITY`] for none). Called from generated code (the kernel ABI's C convention).
pub type HostMapFn =
    unsafe extern "C" fn(op: u32, x: *const f32, y: *mut f32, n: usize, scale: f32, shift: f32, lo: f32, hi: f32);

/// The map-kernel entry generated code may call for `isa`: the AVX2 kernels where the ISA has
/// them; `None` (the generated code evaluates the op itself) otherwise.
pub fn host_map_entry(isa: Isa) -> Option<HostMapFn> {
    #[cfg(target_arch = "x86_64")]
    if isa >= Isa::Avx2Fma {
        return Some(avx2_map_entry);
    }
    let _ = isa;
    None
}

/// # Safety
/// `x` readable and `y` writable for `n` f32 (y may equal x), and the CPU has AVX2 and FMA:
/// installed by [`host_map_entry`] only for an ISA that `Isa::supported` confirmed on this CPU.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn avx2_map_entry(
    op: u32,
    x: *const f32,
    y: *mut f32,
    n: usize,
    scale: f32,
    shift: f32,
    lo: f32,
    hi: f32,
) {
    // An unknown code does nothing: a panic must not unwind into generated code.
    if let Some(op) = MapOp::from_code(op) {
        let pre = MapPre { scale, shift, lo, hi };
        // SAFETY: the caller's contract (generated code passes rows of its own buffers).
        unsafe { if pre.is_identity() { avx2::map(op, x, y, n) } else { avx2::map_pre(op, pre, x, y, n) } }
    }
}

/// The portable instantiation (any CPU).
pub(crate) mod portable {
    use super::vector::Portable;
    use super::*;

    instantiate!(Portable);

    /// # Safety
    /// As [`rows_impl`].
    pub(crate) unsafe fn rows(op: RowOp, x: *const f32, y: *mut f32, n: usize, rows: usize, p: Params) {
        // SAFETY: the caller's contract.
        unsafe { rows_impl(op, x, y, n, rows, p) }
    }

    /// # Safety
    /// `x` readable and `y` writable for `n` f32.
    pub(crate) unsafe fn map(op: MapOp, x: *const f32, y: *mut f32, n: usize) {
        // SAFETY: the caller's contract.
        unsafe { kernels::map::<Portable>(op, x, y, n) }
    }

    /// # Safety
    /// `x` readable and `y` writable for `n` f32 (y may equal x).
    #[cfg(test)] // generated code calls the AVX2 entry only; the tests check this instance too
    pub(crate) unsafe fn map_pre(op: MapOp, pre: MapPre, x: *const f32, y: *mut f32, n: usize) {
        // SAFETY: the caller's contract.
        unsafe { kernels::map_pre::<Portable>(op, pre, x, y, n) }
    }
}
