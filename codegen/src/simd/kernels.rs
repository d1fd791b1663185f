//! The row and map kernels, written once over [`F8`]: softmax, LogSoftmax, LayerNorm, RMSNorm
//! over contiguous rows, and the transcendental maps.
//!
//! Sums accumulate eight-lane f32 partials in four independent registers (32 partial sums, and
//! four chains for the adder's latency) over blocks of [`BLOCK`] elements, and add the block
//! totals in f64: the error grows with the block length, not the row length (a 1 Mi-element
//! softmax row sums 512 blocks exactly enough).

use super::math;
use super::vector::{F8, Lanes, Xn};

/// Elements per f32 partial-sum block (8 KiB: the block is re-read from L1 by the long softmax).
pub(crate) const BLOCK: usize = 2048;

/// Rows up to this many elements run the stored softmax (exponentials written once, scaled in
/// place: 1 exp per element); longer rows the blocked two-pass one (2 exps per element, but 2
/// reads + 1 write of memory instead of 3 + 2).
pub(crate) const STORED_SOFTMAX_MAX: usize = 16 * 1024;

/// Lanes below `len` set.
#[inline(always)]
fn tail_mask<V: F8>(len: usize) -> V {
    let mut a = [0f32; 8];
    for (i, v) in a.iter_mut().enumerate() {
        *v = f32::from_bits(if i < len { !0 } else { 0 });
    }
    V::from_array(a)
}

/// The first `len` < 8 elements at `p`, the other lanes `fill`.
///
/// # Safety
/// `p` is valid for reading `len` f32.
#[inline(always)]
unsafe fn load_tail<V: F8>(p: *const f32, len: usize, fill: f32) -> V {
    let mut a = [fill; 8];
    // SAFETY: the caller guarantees `len` readable f32 at p; `a` holds 8 ≥ len.
    unsafe { std::ptr::copy_nonoverlapping(p, a.as_mut_ptr(), len) };
    V::from_array(a)
}

/// Writes the first `len` < 8 lanes of `v` to `p`.
///
/// # Safety
/// `p` is valid for writing `len` f32.
#[inline(always)]
unsafe fn store_tail<V: F8>(v: V, p: *mut f32, len: usize) {
    let a = v.to_array();
    // SAFETY: the caller guarantees `len` writable f32 at p.
    unsafe { std::ptr::copy_nonoverlapping(a.as_ptr(), p, len) };
}

#[inline(always)]
fn hsum_f64<V: F8>(v: V) -> f64 {
    v.to_array().iter().map(|&x| x as f64).sum()
}

/// Σ f(x) over `n` elements at `x`, in f32 blocks added in f64 (see the module header).
///
/// # Safety
/// `x` is valid for reading `n` f32.
#[inline(always)]
unsafe fn sum_map<V: F8>(x: *const f32, n: usize, f: impl Fn(V) -> V) -> f64 {
    let mut total = 0f64;
    let mut start = 0;
    while start < n {
        let end = (start + BLOCK).min(n);
        let z = V::splat(0.0);
        let (mut a0, mut a1, mut a2, mut a3) = (z, z, z, z);
        let mut i = start;
        // SAFETY (loads): every index read is < end ≤ n.
        unsafe {
            while i + 32 <= end {
                a0 = a0.add(f(V::load(x.add(i))));
                a1 = a1.add(f(V::load(x.add(i + 8))));
                a2 = a2.add(f(V::load(x.add(i + 16))));
                a3 = a3.add(f(V::load(x.add(i + 24))));
                i += 32;
            }
            while i + 8 <= end {
                a0 = a0.add(f(V::load(x.add(i))));
                i += 8;
            }
            if i < end {
                let t = f(load_tail::<V>(x.add(i), end - i, 0.0));
                a1 = a1.add(V::select(tail_mask(end - i), t, z));
            }
        }
        total += hsum_f64(a0.add(a1).add(a2.add(a3)));
        start = end;
    }
    total
}

/// The largest of `n` elements at `x`, NaNs skipped (−∞ when all are NaN or n = 0): a NaN makes
/// the row's exponentials, hence its result, NaN anyway.
///
/// # Safety
/// `x` is valid for reading `n` f32.
#[inline(always)]
unsafe fn max_row<V: F8>(x: *const f32, n: usize) -> f32 {
    let ninf = V::splat(f32::NEG_INFINITY);
    let (mut a0, mut a1, mut a2, mut a3) = (ninf, ninf, ninf, ninf);
    let mut i = 0;
    // SAFETY (loads): every index read is < n. `v.max(acc)` keeps acc where v is NaN.
    unsafe {
        while i + 32 <= n {
            a0 = V::load(x.add(i)).max(a0);
            a1 = V::load(x.add(i + 8)).max(a1);
            a2 = V::load(x.add(i + 16)).max(a2);
            a3 = V::load(x.add(i + 24)).max(a3);
            i += 32;
        }
        while i + 8 <= n {
            a0 = V::load(x.add(i)).max(a0);
            i += 8;
        }
        if i < n {
            a1 = load_tail::<V>(x.add(i), n - i, f32::NEG_INFINITY).max(a1);
        }
    }
    let v = a0.max(a1).max(a2.max(a3)).to_array();
    v.iter().fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m })
}

/// y[i] = f(x[i]) for `n` elements (x may equal y).
///
/// # Safety
/// `x` readable and `y` writable for `n` f32.
#[inline(always)]
unsafe fn map_row<V: F8>(x: *const f32, y: *mut f32, n: usize, f: impl Fn(V) -> V) {
    let mut i = 0;
    // SAFETY: every index touched is < n.
    unsafe {
        while i + 16 <= n {
            let (v0, v1) = (V::load(x.add(i)), V::load(x.add(i + 8)));
            f(v0).store(y.add(i));
            f(v1).store(y.add(i + 8));
            i += 16;
        }
        while i + 8 <= n {
            f(V::load(x.add(i))).store(y.add(i));
            i += 8;
        }
        if i < n {
            store_tail(f(load_tail::<V>(x.add(i), n - i, 0.0)), y.add(i), n - i);
        }
    }
}

/// Softmax of one row of `n` (n ≥ 1).
///
/// # Safety
/// `x` readable and `y` writable for `n` f32 (y may equal x).
#[inline(always)]
pub(crate) unsafe fn softmax_row<V: F8>(x: *const f32, y: *mut f32, n: usize) {
    if n <= STORED_SOFTMAX_MAX {
        // SAFETY: the caller's contract, passed on.
        unsafe {
            let m = V::splat(max_row::<V>(x, n));
            let sum = exp_store_sum::<V>(x, y, n, m, false);
            let inv = V::splat((1.0 / sum) as f32);
            map_row::<V>(y, y, n, |e| e.mul(inv));
        }
        return;
    }
    // SAFETY: as above.
    let (m, sum) = unsafe { online_max_sum::<V>(x, n) };
    let (mv, inv) = (V::splat(m), V::splat((1.0 / sum) as f32));
    // SAFETY: as above.
    unsafe { map_row::<V>(x, y, n, |v| math::exp_nonpos(v.sub(mv)).mul(inv)) };
}

/// Attention's block softmax without its division (as the generated `rows::softmax_exp`): the row
/// max M (NaNs skipped; with `clamp` the logits clamped to [−1e5, 1e5] first, as
/// SoftmaxAlgo::TwoPass), e^{x−M} in place, and 1/Σ returned.
///
/// # Safety
/// `x` readable and writable for `n` f32, n ≥ 1.
#[inline(always)]
pub(crate) unsafe fn softmax_exp_row<V: F8>(x: *mut f32, n: usize, clamp: bool) -> f32 {
    // SAFETY: the caller's contract, passed on.
    unsafe {
        let mut m = max_row::<V>(x, n);
        if clamp {
            // max of the clamped row = the clamped max (max_row skips NaNs: m is not NaN).
            m = m.clamp(-1e5, 1e5);
        }
        (1.0 / exp_store_sum::<V>(x, x, n, V::splat(m), clamp)) as f32
    }
}

/// Writes e^{x−m} to y and returns Σ e^{x−m} (blocked as [`sum_map`]).
///
/// # Safety
/// `x` readable and `y` writable for `n` f32.
#[inline(always)]
unsafe fn exp_store_sum<V: F8>(x: *const f32, y: *mut f32, n: usize, m: V, clamp: bool) -> f64 {
    // With `clamp`, each logit first clamped to [−1e5, 1e5] (NaN kept), as SoftmaxAlgo::TwoPass.
    let logit = |v: V| if clamp { math::clamp_keep_nan(v, -1e5, 1e5) } else { v };
    let mut total = 0f64;
    let mut start = 0;
    while start < n {
        let end = (start + BLOCK).min(n);
        let z = V::splat(0.0);
        let (mut a0, mut a1) = (z, z);
        let mut i = start;
        // SAFETY: every index touched is < end ≤ n.
        unsafe {
            // Four vectors in step (see `Xn`), summed into four accumulators.
            let (mut acc, m4) = (Xn::<V, BUNDLE>::splat(0.0), Xn([m; BUNDLE]));
            while i + 8 * BUNDLE <= end {
                let v = Xn::<V, BUNDLE>::load(x.add(i));
                let v = if clamp { math::clamp_keep_nan(v, -1e5, 1e5) } else { v };
                let e = math::exp_nonpos(v.sub(m4));
                e.store(y.add(i));
                acc = acc.add(e);
                i += 8 * BUNDLE;
            }
            for (k, v) in acc.0.iter().enumerate() {
                if k % 2 == 0 { a0 = a0.add(*v) } else { a1 = a1.add(*v) }
            }
            while i + 16 <= end {
                let e0 = math::exp_nonpos(logit(V::load(x.add(i))).sub(m));
                let e1 = math::exp_nonpos(logit(V::load(x.add(i + 8))).sub(m));
                e0.store(y.add(i));
                e1.store(y.add(i + 8));
                a0 = a0.add(e0);
                a1 = a1.add(e1);
                i += 16;
            }
            while i + 8 <= end {
                let e = math::exp_nonpos(logit(V::load(x.add(i))).sub(m));
                e.store(y.add(i));
                a0 = a0.add(e);
                i += 8;
            }
            if i < end {
                // Padding lanes are −∞: e^{−∞} = 0 adds nothing.
                let e = math::exp_nonpos(logit(load_tail::<V>(x.add(i), end - i, f32::NEG_INFINITY)).sub(m));
                store_tail(e, y.add(i), end - i);
                a1 = a1.add(V::select(tail_mask(end - i), e, z));
            }
        }
        total += hsum_f64(a0.add(a1));
        start = end;
    }
    total
}

/// The row max M and Σ e^{x−M} in one read of the row: per block of [`BLOCK`] (which stays in
/// L1), its max, the running sum rescaled when the max grows, then the block's exponentials.
///
/// # Safety
/// `x` readable for `n` f32.
#[inline(always)]
unsafe fn online_max_sum<V: F8>(x: *const f32, n: usize) -> (f32, f64) {
    let (mut m, mut sum) = (f32::NEG_INFINITY, 0f64);
    let mut start = 0;
    while start < n {
        let len = BLOCK.min(n - start);
        // SAFETY: [start, start + len) ⊂ [0, n).
        let xb = unsafe { x.add(start) };
        // SAFETY: as above.
        let mb = unsafe { max_row::<V>(xb, len) };
        if mb > m {
            sum *= (m as f64 - mb as f64).exp();
            m = mb;
        }
        // Padding lanes of the tail are masked out by sum_map.
        sum += if m == f32::NEG_INFINITY {
            // No finite value yet: the block's −∞ add e^{−∞} = 0 (not e^{−∞−(−∞)} = NaN: a
            // larger max may follow), its NaNs NaN (f32::MIN.max(NaN) is NaN, and NaN·0 too).
            let (lowest, zero) = (V::splat(f32::MIN), V::splat(0.0));
            // SAFETY: as above.
            unsafe { sum_map::<V>(xb, len, |v| lowest.max(v).mul(zero)) }
        } else {
            let mv = V::splat(m);
            // SAFETY: as above.
            unsafe { sum_map::<V>(xb, len, |v| math::exp_nonpos(v.sub(mv))) }
        };
        start += len;
    }
    (m, sum)
}

/// LogSoftmax of one row: x − (M + ln Σ e^{x−M}).
///
/// # Safety
/// `x` readable and `y` writable for `n` f32 (y may equal x).
#[inline(always)]
pub(crate) unsafe fn log_softmax_row<V: F8>(x: *const f32, y: *mut f32, n: usize) {
    // SAFETY: the caller's contract, passed on.
    let (m, sum) = unsafe { online_max_sum::<V>(x, n) };
    let shift = V::splat((m as f64 + sum.ln()) as f32);
    // SAFETY: as above.
    unsafe { map_row::<V>(x, y, n, |v| v.sub(shift)) };
}

/// LayerNorm (`beta` given or not) or RMSNorm (`rms`) of one row of `n` (n ≥ 1): γ and β hold `n`
/// values. The mean is split as hi + lo (hi the rounded mean, lo the mean of x − hi) and x
/// centred as (x − hi) − lo, so the error stays at the scale of σ, not of |μ| (large-offset
/// residual streams), as the generated kernel does; the variance is the two-pass Σ(x − μ)².
///
/// # Safety
/// `x`, `gamma` (and `beta` when `Some`) readable and `y` writable for `n` f32.
#[inline(always)]
pub(crate) unsafe fn norm_row<V: F8>(
    x: *const f32,
    y: *mut f32,
    n: usize,
    gamma: *const f32,
    beta: Option<*const f32>,
    eps: f32,
    rms: bool,
) {
    let nf = n as f64;
    // SAFETY (every block below): the caller's contract; indices < n.
    let (hi, lo) = if rms {
        (V::splat(0.0), V::splat(0.0))
    } else {
        let hi_s = (unsafe { sum_map::<V>(x, n, |v| v) } / nf) as f32;
        let hi = V::splat(hi_s);
        let lo_s = (unsafe { sum_map::<V>(x, n, |v| v.sub(hi)) } / nf) as f32;
        (hi, V::splat(lo_s))
    };
    let centre = |v: V| if rms { v } else { v.sub(hi).sub(lo) };
    let ss = unsafe {
        sum_map::<V>(x, n, |v| {
            let d = centre(v);
            d.mul(d)
        })
    };
    let rstd = V::splat((1.0 / (ss / nf + eps as f64).sqrt()) as f32);
    let mut i = 0;
    unsafe {
        let row = |i: usize, len: usize| -> V {
            let (v, g) = if len == 8 {
                (V::load(x.add(i)), V::load(gamma.add(i)))
            } else {
                (load_tail::<V>(x.add(i), len, 0.0), load_tail::<V>(gamma.add(i), len, 0.0))
            };
            let h = centre(v).mul(rstd);
            match beta {
                Some(b) => {
                    let bv = if len == 8 { V::load(b.add(i)) } else { load_tail::<V>(b.add(i), len, 0.0) };
                    h.fma(g, bv)
                }
                None => h.mul(g),
            }
        };
        while i + 8 <= n {
            row(i, 8).store(y.add(i));
            i += 8;
        }
        if i < n {
            store_tail(row(i, n - i), y.add(i), n - i);
        }
    }
}

/// Σx and Σx² over `n` elements at `x` in one reading pass, each in f32 blocks added in f64 as
/// [`sum_map`] (two accumulators per sum, so the two dependency chains interleave).
///
/// # Safety
/// `x` is valid for reading `n` f32.
#[inline(always)]
unsafe fn sum_and_squares<V: F8>(x: *const f32, n: usize) -> (f64, f64) {
    let (mut sum, mut squares) = (0f64, 0f64);
    let mut start = 0;
    while start < n {
        let end = (start + BLOCK).min(n);
        let z = V::splat(0.0);
        let (mut s0, mut s1, mut q0, mut q1) = (z, z, z, z);
        let mut i = start;
        // SAFETY (loads): every index read is < end ≤ n.
        unsafe {
            while i + 16 <= end {
                let (a, b) = (V::load(x.add(i)), V::load(x.add(i + 8)));
                s0 = s0.add(a);
                s1 = s1.add(b);
                q0 = a.fma(a, q0);
                q1 = b.fma(b, q1);
                i += 16;
            }
            while i + 8 <= end {
                let a = V::load(x.add(i));
                s0 = s0.add(a);
                q0 = a.fma(a, q0);
                i += 8;
            }
            if i < end {
                // The tail's other lanes load as 0 and add nothing to either sum.
                let a = load_tail::<V>(x.add(i), end - i, 0.0);
                s1 = s1.add(a);
                q1 = a.fma(a, q1);
            }
        }
        sum += hsum_f64(s0.add(s1));
        squares += hsum_f64(q0.add(q1));
        start = end;
    }
    (sum, squares)
}

/// CRMSNorm of one row of `n` = d − 1 stored components of a zero-mean x ∈ ℝᵈ (n ≥ 1): the
/// implied x_d = −Σx′ enters the mean square as (Σx′)², so y′ = x′/√((Σx′² + (Σx′)²)/d + ε). One
/// reading pass (Σx′ and Σx′² together) and one writing pass, as RMSNorm, and no γ (the optimizer
/// folds it into the consumers).
///
/// # Safety
/// `x` readable and `y` writable for `n` f32 (y may equal x).
#[inline(always)]
pub(crate) unsafe fn crms_norm_row<V: F8>(x: *const f32, y: *mut f32, n: usize, d: usize, eps: f32) {
    // SAFETY: the caller's contract.
    let (sum, ss) = unsafe { sum_and_squares::<V>(x, n) };
    let scale = V::splat((1.0 / ((ss + sum * sum) / d as f64 + eps as f64).sqrt()) as f32);
    // SAFETY: as above.
    unsafe { map_row::<V>(x, y, n, |v| v.mul(scale)) };
}

/// The elementwise ops with a kernel of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapOp {
    Exp,
    Tanh,
    Sigmoid,
    Silu,
    GeluErf,
    GeluTanh,
    Erf,
}

impl MapOp {
    pub(crate) const ALL: [MapOp; 7] =
        [MapOp::Exp, MapOp::Tanh, MapOp::Sigmoid, MapOp::Silu, MapOp::GeluErf, MapOp::GeluTanh, MapOp::Erf];

    /// The unary op's kernel, if it has one.
    pub fn of(u: kiln_ir::UnaryOp) -> Option<MapOp> {
        use kiln_ir::UnaryOp;
        Some(match u {
            UnaryOp::Exp => MapOp::Exp,
            UnaryOp::Tanh => MapOp::Tanh,
            UnaryOp::Sigmoid => MapOp::Sigmoid,
            UnaryOp::Silu => MapOp::Silu,
            UnaryOp::Erf => MapOp::Erf,
            UnaryOp::Gelu { tanh: false } => MapOp::GeluErf,
            UnaryOp::Gelu { tanh: true } => MapOp::GeluTanh,
            _ => return None,
        })
    }

    /// The op as the `u32` that generated code passes to `host_map_entry`'s function.
    pub fn code(self) -> u32 {
        self as u32
    }

    pub fn from_code(code: u32) -> Option<MapOp> {
        MapOp::ALL.get(code as usize).copied()
    }
}

/// y = op(x) over `n` elements.
///
/// # Safety
/// `x` readable and `y` writable for `n` f32 (y may equal x).
/// `map_row` with `$f` called directly rather than through a closure: a closure (or a fn item
/// passed as `impl Fn`) is compiled as its own function without the caller's
/// `#[target_feature]`, and when it is as large as an exp or erf polynomial LLVM leaves it out of
/// line, every AVX2 intrinsic in it an out-of-line call (Silu over 221,184 floats took 8.8 ms
/// instead of 0.5 ms). Here the inline(always) math functions are inlined into the
/// target-feature kernel that instantiates `map`.
const BUNDLE: usize = 4;
macro_rules! map_direct {
    ($V:ty, $f:ident, $x:expr, $y:expr, $n:expr) => {{
        let (x, y, n): (*const f32, *mut f32, usize) = ($x, $y, $n);
        let mut i = 0;
        while i + 8 * BUNDLE <= n {
            math::$f::<Xn<$V, BUNDLE>>(Xn::<$V, BUNDLE>::load(x.add(i))).store(y.add(i));
            i += 8 * BUNDLE;
        }
        while i + 8 <= n {
            math::$f::<$V>(<$V>::load(x.add(i))).store(y.add(i));
            i += 8;
        }
        if i < n {
            store_tail(math::$f::<$V>(load_tail::<$V>(x.add(i), n - i, 0.0)), y.add(i), n - i);
        }
    }};
}

/// As `map_direct!`, the bundles through `$common` (the value and a mask of the lanes it got
/// wrong), recomputed by `$f` when a lane is masked; the rest (under 8·BUNDLE floats) by `$f`.
macro_rules! map_common {
    ($V:ty, $common:ident, $f:ident, $x:expr, $y:expr, $n:expr) => {{
        let (x, y, n): (*const f32, *mut f32, usize) = ($x, $y, $n);
        let mut i = 0;
        while i + 8 * BUNDLE <= n {
            let v = Xn::<$V, BUNDLE>::load(x.add(i));
            let (r, wrong) = math::$common(v);
            let r = if wrong.any() { math::$f(v) } else { r };
            r.store(y.add(i));
            i += 8 * BUNDLE;
        }
        map_direct!($V, $f, x.add(i), y.add(i), n - i)
    }};
}

/// y = op(x) over `n` elements.
///
/// # Safety
/// `x` readable and `y` writable for `n` f32 (y may equal x).
#[inline(always)]
pub(crate) unsafe fn map<V: F8>(op: MapOp, x: *const f32, y: *mut f32, n: usize) {
    // SAFETY: the caller's contract, passed on; every index touched is < n.
    unsafe {
        match op {
            MapOp::Exp => map_direct!(V, exp, x, y, n),
            MapOp::Tanh => map_direct!(V, tanh, x, y, n),
            MapOp::Sigmoid => map_common!(V, sigmoid_common, sigmoid, x, y, n),
            MapOp::Silu => map_common!(V, silu_common, silu, x, y, n),
            MapOp::GeluErf => {
                // One test of the erfc tail per 16 lanes, so the common case runs both vectors
                // without a branch between them (one test per vector cost 35% on bell data).
                let mut i = 0;
                while i + 16 <= n {
                    let (v0, v1) = (V::load(x.add(i)), V::load(x.add(i + 8)));
                    let (mut c0, m0) = math::gelu_erf_common(v0);
                    let (mut c1, m1) = math::gelu_erf_common(v1);
                    if m0.or(m1).any() {
                        c0 = math::gelu_erf_fix(v0, m0, c0);
                        c1 = math::gelu_erf_fix(v1, m1, c1);
                    }
                    c0.store(y.add(i));
                    c1.store(y.add(i + 8));
                    i += 16;
                }
                map_direct!(V, gelu_erf, x.add(i), y.add(i), n - i)
            }
            MapOp::GeluTanh => map_direct!(V, gelu_tanh, x, y, n),
            MapOp::Erf => map_direct!(V, erf, x, y, n),
        }
    }
}

/// The affine-and-clamp stage a map kernel may run on its input first (`map_pre`):
/// v = x·scale, then v + shift, then v < lo ? lo : v, then v > hi ? hi : v — each step rounded
/// as the generated chain it replaces rounds it (a Mul, an Add, a Clip: NaN kept, −0 kept).
/// [`MapPre::IDENTITY`]'s steps change no value: x·1 = x, x + (−0) = x (for x = −0 too), and
/// comparisons with ∓∞ are never true.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MapPre {
    pub scale: f32,
    pub shift: f32,
    pub lo: f32,
    pub hi: f32,
}

impl MapPre {
    pub const IDENTITY: MapPre = MapPre { scale: 1.0, shift: -0.0, lo: f32::NEG_INFINITY, hi: f32::INFINITY };

    /// Whether every field is bitwise the identity's (then `map` runs alone).
    pub fn is_identity(&self) -> bool {
        let bits = |p: &MapPre| [p.scale.to_bits(), p.shift.to_bits(), p.lo.to_bits(), p.hi.to_bits()];
        bits(self) == bits(&MapPre::IDENTITY)
    }

    /// The stage on one value (the reference for tests, and the kernels' tail rule).
    pub fn apply(&self, x: f32) -> f32 {
        let mut v = x * self.scale + self.shift;
        if v < self.lo {
            v = self.lo;
        }
        if v > self.hi {
            v = self.hi;
        }
        v
    }

    #[inline(always)]
    fn apply_v<V: Lanes>(&self, x: V, scale: V, shift: V, lo: V, hi: V) -> V {
        let v = x.mul(scale).add(shift);
        let v = V::select(v.lt(lo), lo, v);
        V::select(hi.lt(v), hi, v)
    }
}

/// Elements per chunk of [`map_pre`]: the staged input is written to a 1 KiB buffer on the stack
/// (L1) and mapped from there, so the map kernels are reused unchanged.
const PRE_CHUNK: usize = 256;

/// y = op(pre(x)) over `n` elements, in chunks of [`PRE_CHUNK`] (each read whole before any of
/// its outputs is written, so y may equal x).
///
/// # Safety
/// `x` readable and `y` writable for `n` f32 (y may equal x).
#[inline(always)]
pub(crate) unsafe fn map_pre<V: F8>(op: MapOp, pre: MapPre, x: *const f32, y: *mut f32, n: usize) {
    let (scale, shift, lo, hi) = (V::splat(pre.scale), V::splat(pre.shift), V::splat(pre.lo), V::splat(pre.hi));
    let mut buf = [0f32; PRE_CHUNK];
    let mut start = 0;
    while start < n {
        let len = (n - start).min(PRE_CHUNK);
        // SAFETY: every index read or written is < start + len ≤ n; buf holds PRE_CHUNK ≥ len.
        unsafe {
            let (xs, b) = (x.add(start), buf.as_mut_ptr());
            let mut i = 0;
            while i + 8 <= len {
                pre.apply_v(V::load(xs.add(i)), scale, shift, lo, hi).store(b.add(i));
                i += 8;
            }
            while i < len {
                *b.add(i) = pre.apply(*xs.add(i));
                i += 1;
            }
            map::<V>(op, b, y.add(start), len);
        }
        start += len;
    }
}
