//! Eight f32 lanes, two ways: [`Avx2`] (one 256-bit register, AVX2 + FMA intrinsics) and
//! [`Portable`] (an array the compiler vectorises with whatever the build target has). The row
//! and map kernels are written once over [`F8`] and instantiated for each.
//!
//! Every method is `#[inline(always)]`: the kernels are entered through `#[target_feature(enable =
//! "avx2,fma")]` functions, and the intrinsics only become single instructions once inlined into
//! them. `Avx2` values exist only inside those functions, which run only after `Isa` detection
//! found AVX2 and FMA on this CPU.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Lanes of f32 arithmetic (eight, or a bundle of eights, [`X4`]). Comparisons give masks
/// (all-ones or all-zero lanes) for [`Lanes::select`]; `max`/`min` have x86 semantics: `a.max(b)`
/// is `a > b ? a : b`, so a NaN in `a` yields `b`.
pub(crate) trait Lanes: Copy {
    fn splat(v: f32) -> Self;
    fn add(self, o: Self) -> Self;
    fn sub(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
    fn div(self, o: Self) -> Self;
    /// self·b + c (fused on AVX2; two roundings on `Portable`, within the same error bounds).
    fn fma(self, b: Self, c: Self) -> Self;
    fn max(self, o: Self) -> Self;
    fn min(self, o: Self) -> Self;
    /// Lanes where self < o (false for NaN).
    fn lt(self, o: Self) -> Self;
    /// Lanes where self ≤ o (false for NaN).
    fn le(self, o: Self) -> Self;
    /// mask ? a : b, lane by lane.
    fn select(mask: Self, a: Self, b: Self) -> Self;
    fn and(self, o: Self) -> Self;
    fn or(self, o: Self) -> Self;
    /// The bit pattern shifted left by 23 (builds an exponent field).
    fn shl23(self) -> Self;
    /// Whether any lane of a mask is set (its sign bit).
    fn any(self) -> bool;
}

/// Eight f32 lanes in one value, with loads and stores.
pub(crate) trait F8: Lanes {
    /// # Safety
    /// `p` is valid for reading 8 f32 (no alignment required).
    unsafe fn load(p: *const f32) -> Self;
    /// # Safety
    /// `p` is valid for writing 8 f32 (no alignment required).
    unsafe fn store(self, p: *mut f32);
    fn from_array(a: [f32; 8]) -> Self;
    fn to_array(self) -> [f32; 8];
}

/// K vectors of eight lanes computed in step: each operation is applied to the K in turn, so a
/// long dependent chain (an exponential's polynomial, a division) runs K independent copies of
/// itself side by side, which the core overlaps — one vector at a time, the chain's latency, not
/// the execution units, bounds a map kernel.
#[derive(Clone, Copy)]
pub(crate) struct Xn<V, const K: usize>(pub [V; K]);

impl<V: F8, const K: usize> Xn<V, K> {
    /// # Safety
    /// `p` is valid for reading 8·K f32.
    #[inline(always)]
    pub unsafe fn load(p: *const f32) -> Self {
        let mut a = [V::splat(0.0); K];
        for (i, v) in a.iter_mut().enumerate() {
            // SAFETY: the caller's contract.
            *v = unsafe { V::load(p.add(8 * i)) };
        }
        Xn(a)
    }
    /// # Safety
    /// `p` is valid for writing 8·K f32.
    #[inline(always)]
    pub unsafe fn store(self, p: *mut f32) {
        for (i, v) in self.0.iter().enumerate() {
            // SAFETY: the caller's contract.
            unsafe { v.store(p.add(8 * i)) };
        }
    }
}

macro_rules! xn {
    ($($f:ident),*) => {$(
        #[inline(always)]
        fn $f(self, o: Self) -> Self {
            let mut a = self.0;
            for (x, &y) in a.iter_mut().zip(&o.0) {
                *x = x.$f(y);
            }
            Xn(a)
        }
    )*};
}

impl<V: Lanes, const K: usize> Lanes for Xn<V, K> {
    #[inline(always)]
    fn splat(v: f32) -> Self {
        Xn([V::splat(v); K])
    }
    xn!(add, sub, mul, div, max, min, lt, le, and, or);
    #[inline(always)]
    fn fma(self, b: Self, c: Self) -> Self {
        let mut a = self.0;
        for ((x, &y), &z) in a.iter_mut().zip(&b.0).zip(&c.0) {
            *x = x.fma(y, z);
        }
        Xn(a)
    }
    #[inline(always)]
    fn select(mask: Self, a: Self, b: Self) -> Self {
        let mut r = b.0;
        for ((r, &m), &x) in r.iter_mut().zip(&mask.0).zip(&a.0) {
            *r = V::select(m, x, *r);
        }
        Xn(r)
    }
    #[inline(always)]
    fn shl23(self) -> Self {
        let mut a = self.0;
        for x in a.iter_mut() {
            *x = x.shl23();
        }
        Xn(a)
    }
    #[inline(always)]
    fn any(self) -> bool {
        let mut m = self.0[0];
        for &x in &self.0[1..] {
            m = m.or(x);
        }
        m.any()
    }
}

/// All-ones bits: a true mask lane.
const ONES: u32 = !0;

#[derive(Clone, Copy)]
pub(crate) struct Portable([f32; 8]);

impl Portable {
    #[inline(always)]
    fn zip(self, o: Self, f: impl Fn(f32, f32) -> f32) -> Self {
        Portable(std::array::from_fn(|i| f(self.0[i], o.0[i])))
    }
    #[inline(always)]
    fn map(self, f: impl Fn(f32) -> f32) -> Self {
        Portable(self.0.map(f))
    }
    #[inline(always)]
    fn mask(b: bool) -> f32 {
        f32::from_bits(if b { ONES } else { 0 })
    }
}

impl Lanes for Portable {
    #[inline(always)]
    fn splat(v: f32) -> Self {
        Portable([v; 8])
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        self.zip(o, |a, b| a + b)
    }
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        self.zip(o, |a, b| a - b)
    }
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        self.zip(o, |a, b| a * b)
    }
    #[inline(always)]
    fn div(self, o: Self) -> Self {
        self.zip(o, |a, b| a / b)
    }
    #[inline(always)]
    fn fma(self, b: Self, c: Self) -> Self {
        // Not f32::mul_add: without FMA hardware that is a libm call per element.
        self.mul(b).add(c)
    }
    #[inline(always)]
    fn max(self, o: Self) -> Self {
        self.zip(o, |a, b| if a > b { a } else { b })
    }
    #[inline(always)]
    fn min(self, o: Self) -> Self {
        self.zip(o, |a, b| if a < b { a } else { b })
    }
    #[inline(always)]
    fn lt(self, o: Self) -> Self {
        self.zip(o, |a, b| Self::mask(a < b))
    }
    #[inline(always)]
    fn le(self, o: Self) -> Self {
        self.zip(o, |a, b| Self::mask(a <= b))
    }
    #[inline(always)]
    fn select(mask: Self, a: Self, b: Self) -> Self {
        Portable(std::array::from_fn(|i| {
            let m = mask.0[i].to_bits();
            f32::from_bits((m & a.0[i].to_bits()) | (!m & b.0[i].to_bits()))
        }))
    }
    #[inline(always)]
    fn and(self, o: Self) -> Self {
        self.zip(o, |a, b| f32::from_bits(a.to_bits() & b.to_bits()))
    }
    #[inline(always)]
    fn or(self, o: Self) -> Self {
        self.zip(o, |a, b| f32::from_bits(a.to_bits() | b.to_bits()))
    }
    #[inline(always)]
    fn shl23(self) -> Self {
        self.map(|a| f32::from_bits(a.to_bits() << 23))
    }
    #[inline(always)]
    fn any(self) -> bool {
        self.0.iter().any(|m| m.is_sign_negative())
    }
}

impl F8 for Portable {
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: the caller guarantees 8 readable f32 at p.
        Portable(unsafe { std::ptr::read_unaligned(p as *const [f32; 8]) })
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: the caller guarantees 8 writable f32 at p.
        unsafe { std::ptr::write_unaligned(p as *mut [f32; 8], self.0) }
    }
    #[inline(always)]
    fn from_array(a: [f32; 8]) -> Self {
        Portable(a)
    }
    #[inline(always)]
    fn to_array(self) -> [f32; 8] {
        self.0
    }
}

#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(crate) struct Avx2(__m256);

// SAFETY (every `unsafe` block in this impl): the intrinsics need AVX, AVX2 or FMA, and an `Avx2`
// value is only created inside `#[target_feature(enable = "avx2,fma")]` kernels, entered only
// when `Isa` detection found both on this CPU (see the module header); pointer arguments are
// the callers' contract, stated on the trait.
#[cfg(target_arch = "x86_64")]
impl Lanes for Avx2 {
    #[inline(always)]
    fn splat(v: f32) -> Self {
        Avx2(unsafe { _mm256_set1_ps(v) })
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        Avx2(unsafe { _mm256_add_ps(self.0, o.0) })
    }
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        Avx2(unsafe { _mm256_sub_ps(self.0, o.0) })
    }
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        Avx2(unsafe { _mm256_mul_ps(self.0, o.0) })
    }
    #[inline(always)]
    fn div(self, o: Self) -> Self {
        Avx2(unsafe { _mm256_div_ps(self.0, o.0) })
    }
    #[inline(always)]
    fn fma(self, b: Self, c: Self) -> Self {
        Avx2(unsafe { _mm256_fmadd_ps(self.0, b.0, c.0) })
    }
    #[inline(always)]
    fn max(self, o: Self) -> Self {
        Avx2(unsafe { _mm256_max_ps(self.0, o.0) })
    }
    #[inline(always)]
    fn min(self, o: Self) -> Self {
        Avx2(unsafe { _mm256_min_ps(self.0, o.0) })
    }
    #[inline(always)]
    fn lt(self, o: Self) -> Self {
        Avx2(unsafe { _mm256_cmp_ps::<_CMP_LT_OQ>(self.0, o.0) })
    }
    #[inline(always)]
    fn le(self, o: Self) -> Self {
        Avx2(unsafe { _mm256_cmp_ps::<_CMP_LE_OQ>(self.0, o.0) })
    }
    #[inline(always)]
    fn select(mask: Self, a: Self, b: Self) -> Self {
        Avx2(unsafe { _mm256_blendv_ps(b.0, a.0, mask.0) })
    }
    #[inline(always)]
    fn and(self, o: Self) -> Self {
        Avx2(unsafe { _mm256_and_ps(self.0, o.0) })
    }
    #[inline(always)]
    fn or(self, o: Self) -> Self {
        Avx2(unsafe { _mm256_or_ps(self.0, o.0) })
    }
    #[inline(always)]
    fn shl23(self) -> Self {
        Avx2(unsafe { _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_castps_si256(self.0))) })
    }
    #[inline(always)]
    fn any(self) -> bool {
        unsafe { _mm256_movemask_ps(self.0) != 0 }
    }
}

// SAFETY (every `unsafe` block in this impl): as the `Lanes` impl above.
#[cfg(target_arch = "x86_64")]
impl F8 for Avx2 {
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Avx2(unsafe { _mm256_loadu_ps(p) })
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        unsafe { _mm256_storeu_ps(p, self.0) }
    }
    #[inline(always)]
    fn from_array(a: [f32; 8]) -> Self {
        Avx2(unsafe { _mm256_loadu_ps(a.as_ptr()) })
    }
    #[inline(always)]
    fn to_array(self) -> [f32; 8] {
        let mut a = [0f32; 8];
        unsafe { _mm256_storeu_ps(a.as_mut_ptr(), self.0) };
        a
    }
}
