//! Row kernels: one row of `n` contiguous f32 per iteration, rows split across threads.
//! Softmax (two-pass, three-pass, and one that stores its exponentials for rows in cache),
//! LogSoftmax, LayerNorm, RMSNorm, and reductions over contiguous rows or over a strided middle
//! axis.
//!
//! Reductions accumulate in f32 with two f32x4 accumulators (eight partial sums) and a pairwise
//! horizontal fold; the reference accumulates in f64, so tests allow ≈ n·2⁻²⁴ relative to Σ|x|.

use super::loops::{RowLoop, const_offset, counted, inner_loop, load_arg_ptr};
use crate::jit::{HostFeatures, Jit};
use crate::vmath::Lanes;
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Value, types};
use cranelift_frontend::FunctionBuilder;
use kiln_ir::ReduceKind;

/// Which softmax algorithm to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoftmaxAlgo {
    /// Dukhan & Ablavatski: one pass accumulates Σeˣ as m·2ᵉ with a running exponent, the second
    /// writes y. 2 reads + 1 write per element. Inputs are clamped to [−1e5, 1e5] so that the
    /// exponent bookkeeping stays exact (a row entirely below −1e5, e.g. fully masked with −inf,
    /// comes out uniform).
    TwoPass,
    /// The classic three passes (../shared/seed-models.md §8): max, Σe^{x−max}, then y = e^{x−max}/Σ
    /// with the exponential computed again: 3 reads + 1 write, two exponentials per element. Kept
    /// for comparison.
    ThreePass,
    /// max; e^{x−max} written to y while Σ accumulates; y·(1/Σ): 3 reads + 2 writes, one
    /// exponential per element. With 128-bit vectors the exponential, not memory, bounds softmax
    /// here, so computing it once wins at every row length measured (criterion, 1 thread: 4 Ki
    /// floats 8.3 µs vs two-pass 10.0 µs; 1 Mi 1.78 vs 2.99 ms; 8 Mi 16.7 vs 21.7 ms).
    ThreePassStored,
    /// The default: Softmax and LogSoftmax run the hand-written row kernel of `crate::simd`
    /// (256-bit where the CPU has AVX2; stored three-pass for rows up to 16 Ki floats, a blocked
    /// two-pass beyond), not generated code. Attention's block softmax, which is generated, runs
    /// as [`SoftmaxAlgo::ThreePassStored`].
    Simd,
}

fn flags() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

fn row_ptr(b: &mut FunctionBuilder, base: Value, row: Value, n: usize) -> Value {
    let off = b.ins().imul_imm_s(row, (n * 4) as i64);
    b.ins().iadd(base, off)
}

fn load(b: &mut FunctionBuilder, vector: bool, base: Value, idx: Value) -> Value {
    let byte = b.ins().ishl_imm_s(idx, 2);
    let addr = b.ins().iadd(base, byte);
    let ty = if vector { types::F32X4 } else { types::F32 };
    b.ins().load(ty, flags(), addr, 0)
}

fn store(b: &mut FunctionBuilder, v: Value, base: Value, idx: Value) {
    let byte = b.ins().ishl_imm_s(idx, 2);
    let addr = b.ins().iadd(base, byte);
    b.ins().store(flags(), v, addr, 0);
}

type Map<'m> = &'m dyn Fn(&mut Lanes, Value) -> Value;
type Comb<'m> = &'m dyn Fn(&mut Lanes, Value, Value) -> Value;

/// Folds `comb` over `map(x)` for the `n` elements at `row`; returns a scalar.
fn fold_row(
    b: &mut FunctionBuilder,
    feat: HostFeatures,
    row: Value,
    n: usize,
    init: f32,
    map: Map,
    comb: Comb,
) -> Value {
    let init_v = {
        let mut l = Lanes::new(b, true, feat.fma);
        l.c(init)
    };
    let acc0 = b.declare_var(types::F32X4);
    let acc1 = b.declare_var(types::F32X4);
    b.def_var(acc0, init_v);
    b.def_var(acc1, init_v);
    let n8 = n / 8 * 8;
    if n8 > 0 {
        let zero = b.ins().iconst(types::I64, 0);
        let to = b.ins().iconst(types::I64, n8 as i64);
        counted(b, zero, to, 8, &mut |b, i| {
            let x0 = load(b, true, row, i);
            let i4 = b.ins().iadd_imm_s(i, 4);
            let x1 = load(b, true, row, i4);
            let a0 = b.use_var(acc0);
            let a1 = b.use_var(acc1);
            let mut l = Lanes::new(b, true, feat.fma);
            let m0 = map(&mut l, x0);
            let m1 = map(&mut l, x1);
            let r0 = comb(&mut l, a0, m0);
            let r1 = comb(&mut l, a1, m1);
            b.def_var(acc0, r0);
            b.def_var(acc1, r1);
        });
    }
    if n % 8 >= 4 {
        let i = b.ins().iconst(types::I64, n8 as i64);
        let x = load(b, true, row, i);
        let a0 = b.use_var(acc0);
        let mut l = Lanes::new(b, true, feat.fma);
        let m = map(&mut l, x);
        let r = comb(&mut l, a0, m);
        b.def_var(acc0, r);
    }
    let a0 = b.use_var(acc0);
    let a1 = b.use_var(acc1);
    let mut l = Lanes::new(b, true, feat.fma);
    let v = comb(&mut l, a0, a1);
    let mut s = l.hfold(v, comb);
    for k in n / 4 * 4..n {
        let (addr, imm) = const_offset(b, row, k * 4);
        let x = b.ins().load(types::F32, flags(), addr, imm);
        let mut l = Lanes::new(b, false, feat.fma);
        let m = map(&mut l, x);
        s = comb(&mut l, s, m);
    }
    s
}

fn add(l: &mut Lanes, a: Value, b: Value) -> Value {
    l.add(a, b)
}
fn ident(_: &mut Lanes, x: Value) -> Value {
    x
}
fn square(l: &mut Lanes, x: Value) -> Value {
    l.mul(x, x)
}

fn max(l: &mut Lanes, a: Value, b: Value) -> Value {
    l.max(a, b)
}
fn min(l: &mut Lanes, a: Value, b: Value) -> Value {
    l.min(a, b)
}
fn mul(l: &mut Lanes, a: Value, b: Value) -> Value {
    l.mul(a, b)
}

/// What a row kernel's body gets: its input and output row pointers, the row index, and the base
/// pointers of the kernel's other arguments (`args[2..]`, in order).
struct RowArgs {
    x: Value,
    y: Value,
    row: Value,
    params: Vec<Value>,
}

/// Defines a row kernel with arguments `[out, x, params…]` (`n_params` of them): the row loop
/// over `[start, end)`, row r reading `x` from element r·`x_len` and writing `out` from element
/// r·`y_len`; `body` emits one row.
fn row_kernel(
    jit: &mut Jit,
    name: &str,
    x_len: usize,
    y_len: usize,
    n_params: usize,
    body: impl FnOnce(&mut FunctionBuilder, HostFeatures, &RowArgs),
) -> Result<(), String> {
    jit.define(name, move |b, [args, start, end], feat| {
        let out = load_arg_ptr(b, args, 0);
        let x = load_arg_ptr(b, args, 1);
        let params = (0..n_params).map(|i| load_arg_ptr(b, args, 2 + i)).collect();
        let rl = RowLoop::begin(b, start, end);
        let xr = row_ptr(b, x, rl.row, x_len);
        let yr = row_ptr(b, out, rl.row, y_len);
        body(b, feat, &RowArgs { x: xr, y: yr, row: rl.row, params });
        rl.end(b);
    })
}

/// Emits scalar (one-lane) arithmetic.
fn scalar<R>(b: &mut FunctionBuilder, feat: HostFeatures, f: impl FnOnce(&mut Lanes) -> R) -> R {
    f(&mut Lanes::new(b, false, feat.fma))
}

/// The row's mean as hi + lo: hi is the rounded mean, lo the mean of x − hi. Centring as
/// (x − hi) − lo ([`centre`]) keeps the error at the scale of σ rather than of |μ| (large-offset
/// residual streams).
fn split_mean(b: &mut FunctionBuilder, feat: HostFeatures, xr: Value, n: usize) -> (Value, Value) {
    let inv_n = 1.0 / n as f32;
    let s = fold_row(b, feat, xr, n, 0.0, &ident, &add);
    let hi = scalar(b, feat, |l| {
        let k = l.c(inv_n);
        l.mul(s, k)
    });
    let r = fold_row(
        b,
        feat,
        xr,
        n,
        0.0,
        &|l, v| {
            let h = l.splat(hi);
            l.sub(v, h)
        },
        &add,
    );
    let lo = scalar(b, feat, |l| {
        let k = l.c(inv_n);
        l.mul(r, k)
    });
    (hi, lo)
}

/// (v − hi) − lo, hi and lo scalars (see [`split_mean`]).
fn centre(l: &mut Lanes, v: Value, (hi, lo): (Value, Value)) -> Value {
    let h = l.splat(hi);
    let lo = l.splat(lo);
    let t = l.sub(v, h);
    l.sub(t, lo)
}

/// Σ(x − μ)² over the row (two-pass variance: no cancellation); μ = 0 for `None`.
fn sum_sq_dev(b: &mut FunctionBuilder, feat: HostFeatures, xr: Value, n: usize, mean: Option<(Value, Value)>) -> Value {
    fold_row(
        b,
        feat,
        xr,
        n,
        0.0,
        &|l, v| {
            let d = match mean {
                Some(m) => centre(l, v, m),
                None => v,
            };
            l.mul(d, d)
        },
        &add,
    )
}

/// 1/√(ss/n + ε).
fn rstd(b: &mut FunctionBuilder, feat: HostFeatures, ss: Value, n: usize, eps: f32) -> Value {
    scalar(b, feat, |l| {
        let k = l.c(1.0 / n as f32);
        let e = l.c(eps);
        let var = l.mul_add(ss, k, e);
        let sd = l.sqrt(var);
        let one = l.c(1.0);
        l.div(one, sd)
    })
}

/// Softmax or LogSoftmax over rows of `n`. Arguments: `[out, x]`.
pub fn softmax(jit: &mut Jit, name: &str, n: usize, algo: SoftmaxAlgo, log: bool) -> Result<(), String> {
    row_kernel(jit, name, n, n, 0, move |b, feat, r| {
        let (xr, yr) = (r.x, r.y);
        if !log && matches!(algo, SoftmaxAlgo::ThreePassStored | SoftmaxAlgo::Simd) {
            let m = fold_row(b, feat, xr, n, f32::NEG_INFINITY, &ident, &max);
            let sum = exp_store_sum(b, feat, (xr, yr), n, m, false);
            let inv = reciprocal(b, feat, sum);
            inner_loop(b, n, &|b, vector, i| {
                let e = load(b, vector, yr, i);
                let mut l = Lanes::new(b, vector, feat.fma);
                let is = l.splat(inv);
                let y = l.mul(e, is);
                store(b, y, yr, i);
            });
        } else if log || algo == SoftmaxAlgo::ThreePass {
            let m = fold_row(b, feat, xr, n, f32::NEG_INFINITY, &ident, &max);
            let sum = fold_row(
                b,
                feat,
                xr,
                n,
                0.0,
                &|l, v| {
                    let ms = l.splat(m);
                    let d = l.sub(v, ms);
                    l.exp(d)
                },
                &add,
            );
            if log {
                let shift = scalar(b, feat, |l| {
                    let ls = l.log(sum);
                    l.add(m, ls)
                });
                inner_loop(b, n, &|b, vector, i| {
                    let v = load(b, vector, xr, i);
                    let mut l = Lanes::new(b, vector, feat.fma);
                    let s = l.splat(shift);
                    let y = l.sub(v, s);
                    store(b, y, yr, i);
                });
            } else {
                let inv = reciprocal(b, feat, sum);
                inner_loop(b, n, &|b, vector, i| {
                    let v = load(b, vector, xr, i);
                    let mut l = Lanes::new(b, vector, feat.fma);
                    let ms = l.splat(m);
                    let d = l.sub(v, ms);
                    let e = l.exp(d);
                    let is = l.splat(inv);
                    let y = l.mul(e, is);
                    store(b, y, yr, i);
                });
            }
        } else {
            two_pass(b, feat, xr, yr, n);
        }
    })
}

/// Writes e^{x−m} to `yr` and returns Σ e^{x−m}, for `m` the row max (so x − m ≤ 0 and the cheap
/// [`exp_nonpos`] applies); with `clamp` each x is first clamped like [`SoftmaxAlgo::TwoPass`]'s
/// logits. `yr` may be `xr` (in place): each element is read before it is overwritten. Shared by
/// the stored three-pass softmax and attention's block softmax.
fn exp_store_sum(
    b: &mut FunctionBuilder,
    feat: HostFeatures,
    (xr, yr): (Value, Value),
    n: usize,
    m: Value,
    clamp: bool,
) -> Value {
    let vacc = b.declare_var(types::F32X4);
    let sacc = b.declare_var(types::F32);
    let zv = Lanes::new(b, true, feat.fma).c(0.0);
    let zs = Lanes::new(b, false, feat.fma).c(0.0);
    b.def_var(vacc, zv);
    b.def_var(sacc, zs);
    inner_loop(b, n, &|b, vector, i| {
        let v = load(b, vector, xr, i);
        let acc = b.use_var(if vector { vacc } else { sacc });
        let mut l = Lanes::new(b, vector, feat.fma);
        let v = if clamp { clamp_logit(&mut l, v) } else { v };
        let ms = l.splat(m);
        let d = l.sub(v, ms);
        let e = exp_nonpos(&mut l, d);
        let acc = l.add(acc, e);
        store(b, e, yr, i);
        b.def_var(if vector { vacc } else { sacc }, acc);
    });
    let va = b.use_var(vacc);
    let sa = b.use_var(sacc);
    let h = Lanes::new(b, true, feat.fma).hsum(va);
    scalar(b, feat, |l| l.add(h, sa))
}

/// 1/v for a scalar v.
fn reciprocal(b: &mut FunctionBuilder, feat: HostFeatures, v: Value) -> Value {
    scalar(b, feat, |l| {
        let one = l.c(1.0);
        l.div(one, v)
    })
}

/// Softmax without its final division, for rows that stay in cache (attention's score blocks):
/// the row max, then e = exp(x − max) written to `y` while it is summed, and 1/Σe written to
/// `inv[row]`; the caller applies the factor (attention scales the much shorter ·V output rows
/// instead of the probabilities). One exp per element where [`softmax`] computes two, for one
/// more read and write of the row, which is cheap from L1/L2. Arguments: `[y, x, inv]`; `y` may
/// be `x` (in place). With `clamp` the logits are first clamped to [−1e5, 1e5] as
/// [`SoftmaxAlgo::TwoPass`] does (a row entirely below −1e5, e.g. fully masked with −∞, comes out
/// uniform); without, a fully −∞ row gives NaN as [`SoftmaxAlgo::ThreePass`] and the reference do.
pub fn softmax_exp(jit: &mut Jit, name: &str, n: usize, clamp: bool) -> Result<(), String> {
    row_kernel(jit, name, n, n, 1, move |b, feat, r| {
        let (xr, yr) = (r.x, r.y);
        // The max may skip NaNs (a compare and a blend instead of IEEE max): a NaN score makes
        // its exponential, hence the row's sum and factor, NaN anyway, as in the reference.
        let mut m = fold_row(b, feat, xr, n, f32::NEG_INFINITY, &ident, &max_skip_nan);
        if clamp {
            // max of the clamped row = the clamped max.
            m = scalar(b, feat, |l| clamp_logit(l, m));
        }
        let sum = exp_store_sum(b, feat, (xr, yr), n, m, clamp);
        let inv = reciprocal(b, feat, sum);
        store(b, inv, r.params[0], r.row);
    })
}

fn max_skip_nan(l: &mut Lanes, a: Value, b: Value) -> Value {
    l.max_no_nan(a, b)
}

/// eᵈ for d ≤ 0, −∞ or NaN (a score minus its row max): the reduced form times one 2ⁿ, flushed to
/// 0 below 2⁻¹²⁶ (e⁻⁸⁷, nothing next to the max's own term 1 in the sum); NaN stays NaN. Cheaper
/// than `Lanes::exp`, which also handles overflow and the subnormal range.
fn exp_nonpos(l: &mut Lanes, d: Value) -> Value {
    // Keeps n = round(d·log2 e) in [−150, 0] (−∞ included); a NaN compares false and stays.
    let lo = l.c(-104.0);
    let below = l.cmp(FloatCC::LessThan, d, lo);
    let d = l.sel(below, lo, d);
    let (p, n) = l.exp_parts(d);
    let s = l.pow2_nonpos(n);
    l.mul(p, s)
}

fn clamp_logit(l: &mut Lanes, v: Value) -> Value {
    l.clamp_keep_nan(v, -1e5, 1e5)
}

/// Merges two (m, e) accumulators meaning m·2ᵉ.
fn merge(l: &mut Lanes, m1: Value, e1: Value, m2: Value, e2: Value) -> (Value, Value) {
    // A NaN input already makes m NaN, so the exponent max need not propagate it.
    let e = l.max_no_nan(e1, e2);
    let d1 = l.sub(e1, e);
    let d2 = l.sub(e2, e);
    let s1 = l.pow2_nonpos(d1);
    let s2 = l.pow2_nonpos(d2);
    let a = l.mul(m1, s1);
    (l.mul_add(m2, s2, a), e)
}

fn two_pass(b: &mut FunctionBuilder, feat: HostFeatures, xr: Value, yr: Value, n: usize) {
    // Pass 1: per-lane (m, e), starting from (0, −1e30) so the first merge takes the element.
    let vm = b.declare_var(types::F32X4);
    let ve = b.declare_var(types::F32X4);
    let (z, big) = {
        let mut l = Lanes::new(b, true, feat.fma);
        (l.c(0.0), l.c(-1e30))
    };
    b.def_var(vm, z);
    b.def_var(ve, big);
    let n4 = n / 4 * 4;
    if n4 > 0 {
        let zero = b.ins().iconst(types::I64, 0);
        let to = b.ins().iconst(types::I64, n4 as i64);
        counted(b, zero, to, 4, &mut |b, i| {
            let v = load(b, true, xr, i);
            let m = b.use_var(vm);
            let e = b.use_var(ve);
            let mut l = Lanes::new(b, true, feat.fma);
            let v = clamp_logit(&mut l, v);
            let (p, k) = l.exp_parts(v);
            let (m2, e2) = merge(&mut l, m, e, p, k);
            b.def_var(vm, m2);
            b.def_var(ve, e2);
        });
    }
    let m = b.use_var(vm);
    let e = b.use_var(ve);
    let ml: Vec<Value> = (0..4u8).map(|i| b.ins().extractlane(m, i)).collect();
    let el: Vec<Value> = (0..4u8).map(|i| b.ins().extractlane(e, i)).collect();
    let mut l = Lanes::new(b, false, feat.fma);
    let (ma, ea) = merge(&mut l, ml[0], el[0], ml[1], el[1]);
    let (mb, eb) = merge(&mut l, ml[2], el[2], ml[3], el[3]);
    let (mut mt, mut et) = merge(&mut l, ma, ea, mb, eb);
    for k in n4..n {
        let (addr, imm) = const_offset(l.b, xr, k * 4);
        let v = l.b.ins().load(types::F32, flags(), addr, imm);
        let v = clamp_logit(&mut l, v);
        let (p, kk) = l.exp_parts(v);
        (mt, et) = merge(&mut l, mt, et, p, kk);
    }
    let one = l.c(1.0);
    let inv = l.div(one, mt);
    // Pass 2: y = p·(1/m)·2^{n−e}.
    inner_loop(b, n, &|b, vector, i| {
        let v = load(b, vector, xr, i);
        let mut l = Lanes::new(b, vector, feat.fma);
        let v = clamp_logit(&mut l, v);
        let (p, k) = l.exp_parts(v);
        let es = l.splat(et);
        let d = l.sub(k, es);
        let s = l.pow2_nonpos(d);
        let is = l.splat(inv);
        let pi = l.mul(p, is);
        let y = l.mul(pi, s);
        store(b, y, yr, i);
    });
}

/// LayerNorm (`rms = false`: (x − μ)/√(σ² + ε)·γ + β) or RMSNorm (x/√(mean x² + ε)·γ) over rows of
/// `n`. Arguments: `[out, x, γ]` plus `β` when `bias`. γ and β hold `n` values.
pub fn norm(jit: &mut Jit, name: &str, n: usize, eps: f32, rms: bool, bias: bool) -> Result<(), String> {
    row_kernel(jit, name, n, n, 1 + bias as usize, move |b, feat, r| {
        let (xr, yr, g, beta) = (r.x, r.y, r.params[0], r.params.get(1).copied());
        let mean = if rms { None } else { Some(split_mean(b, feat, xr, n)) };
        let ss = sum_sq_dev(b, feat, xr, n, mean);
        let rstd = rstd(b, feat, ss, n, eps);
        inner_loop(b, n, &|b, vector, i| {
            let v = load(b, vector, xr, i);
            let gv = load(b, vector, g, i);
            let bv = beta.map(|p| load(b, vector, p, i));
            let mut l = Lanes::new(b, vector, feat.fma);
            let d = match mean {
                Some(m) => centre(&mut l, v, m),
                None => v,
            };
            let rs = l.splat(rstd);
            let h = l.mul(d, rs);
            let y = match bv {
                Some(bv) => l.mul_add(h, gv, bv),
                None => l.mul(h, gv),
            };
            store(b, y, yr, i);
        });
    })
}

fn finish_reduce(l: &mut Lanes, kind: ReduceKind, acc: Value, count: usize) -> Value {
    match kind {
        ReduceKind::Sum | ReduceKind::Max | ReduceKind::Min | ReduceKind::Prod => acc,
        ReduceKind::Mean => {
            let k = l.c(1.0 / count as f32);
            l.mul(acc, k)
        }
        ReduceKind::L2 => l.sqrt(acc),
    }
}

fn reduce_parts(kind: ReduceKind) -> (f32, Map<'static>, Comb<'static>) {
    match kind {
        ReduceKind::Sum | ReduceKind::Mean => (0.0, &ident, &add),
        ReduceKind::Max => (f32::NEG_INFINITY, &ident, &max),
        ReduceKind::L2 => (0.0, &square, &add),
        ReduceKind::Min => (f32::INFINITY, &ident, &min),
        // Accumulates in f32 (the reference in f64): an intermediate product can overflow or
        // underflow where the f64 one does not; otherwise within n·ulp.
        ReduceKind::Prod => (1.0, &ident, &mul),
    }
}

/// Reduces each contiguous row of `n` to one value. Arguments: `[out, x]`.
pub fn reduce_rows(jit: &mut Jit, name: &str, n: usize, kind: ReduceKind) -> Result<(), String> {
    row_kernel(jit, name, n, 1, 0, move |b, feat, r| {
        let (init, map, comb) = reduce_parts(kind);
        let acc = fold_row(b, feat, r.x, n, init, map, comb);
        let y = scalar(b, feat, |l| finish_reduce(l, kind, acc, n));
        b.ins().store(flags(), y, r.y, 0);
    })
}

/// Reduces the middle axis of `[outer, r, inner]` to `[outer, inner]`; one outer index per row.
/// Arguments: `[out, x]`.
pub fn reduce_strided(jit: &mut Jit, name: &str, r: usize, inner: usize, kind: ReduceKind) -> Result<(), String> {
    row_kernel(jit, name, r * inner, inner, 0, move |b, feat, row| {
        let (xr, yr) = (row.x, row.y);
        let (init, map, comb) = reduce_parts(kind);
        inner_loop(b, inner, &|b, vector, i| {
            let ty = if vector { types::F32X4 } else { types::F32 };
            let acc = b.declare_var(ty);
            let init_v = Lanes::new(b, vector, feat.fma).c(init);
            b.def_var(acc, init_v);
            let base = {
                let byte = b.ins().ishl_imm_s(i, 2);
                b.ins().iadd(xr, byte)
            };
            let zero = b.ins().iconst(types::I64, 0);
            let to = b.ins().iconst(types::I64, r as i64);
            counted(b, zero, to, 1, &mut |b, k| {
                let off = b.ins().imul_imm_s(k, (inner * 4) as i64);
                let addr = b.ins().iadd(base, off);
                let v = b.ins().load(ty, flags(), addr, 0);
                let a = b.use_var(acc);
                let mut l = Lanes::new(b, vector, feat.fma);
                let m = map(&mut l, v);
                let s = comb(&mut l, a, m);
                b.def_var(acc, s);
            });
            let a = b.use_var(acc);
            let mut l = Lanes::new(b, vector, feat.fma);
            let y = finish_reduce(&mut l, kind, a, r);
            store(b, y, yr, i);
        });
    })
}

/// GroupNorm/InstanceNorm: `x` is `[N, G·cpg, S]` in memory, one row per (n, g) of `cpg·s`
/// contiguous values; statistics over the row (two-pass variance), then the per-channel affine
/// y = x·(γ_c·rstd) + (β_c − μ·γ_c·rstd). Arguments: `[out, x, γ, β]`, γ and β of `G·cpg`.
pub fn group_norm(jit: &mut Jit, name: &str, groups: usize, cpg: usize, s: usize, eps: f32) -> Result<(), String> {
    group_stats_kernel(jit, name, groups, cpg, s, eps, GroupMode::Norm)
}

/// What the group-statistics kernel applies per element once it has μ and rstd = 1/√(σ² + ε).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupMode {
    /// (x − μ)·rstd·γ + β. Arguments `[out, x, γ, β]`.
    Norm,
    /// EvoNorm-S0: x·σ(v·x)·rstd·γ + β. Arguments `[out, x, v, γ, β]`.
    EvoS0,
    /// EvoNorm-B0 (one channel per group): x / max(√(rv + ε), v·x + 1/rstd)·γ + β.
    /// Arguments `[out, x, v, γ, β, rv]`.
    EvoB0,
}

/// Statistics over rows of `cpg·s` values (one group of one image), then a per-channel formula.
pub fn group_stats_kernel(
    jit: &mut Jit,
    name: &str,
    groups: usize,
    cpg: usize,
    s: usize,
    eps: f32,
    mode: GroupMode,
) -> Result<(), String> {
    let n = cpg * s;
    // Parameters after x: Norm [γ, β]; EvoS0 [v, γ, β]; EvoB0 [v, γ, β, rv].
    let n_params = match mode {
        GroupMode::Norm => 2,
        GroupMode::EvoS0 => 3,
        GroupMode::EvoB0 => 4,
    };
    row_kernel(jit, name, n, n, n_params, move |b, feat, row| {
        let (xr, yr, p) = (row.x, row.y, &row.params);
        let first = if mode == GroupMode::Norm { 0 } else { 1 };
        let vptr = if mode == GroupMode::Norm { None } else { Some(p[0]) };
        let (gamma, beta) = (p[first], p[first + 1]);
        let rvptr = if mode == GroupMode::EvoB0 { Some(p[3]) } else { None };
        let (hi, lo) = split_mean(b, feat, xr, n);
        let ss = sum_sq_dev(b, feat, xr, n, Some((hi, lo)));
        let rstd = rstd(b, feat, ss, n, eps);
        let g = b.ins().urem_imm_s(row.row, groups as i64);
        let c0 = b.ins().imul_imm_s(g, cpg as i64);
        let zero = b.ins().iconst(types::I64, 0);
        let to = b.ins().iconst(types::I64, cpg as i64);
        counted(b, zero, to, 1, &mut |b, ci| {
            let c = b.ins().iadd(c0, ci);
            let gv = load(b, false, gamma, c);
            let bv = load(b, false, beta, c);
            let vv = vptr.map(|p| load(b, false, p, c));
            let rv = rvptr.map(|p| load(b, false, p, c));
            let scale = scalar(b, feat, |l| l.mul(gv, rstd));
            // EvoNorm-B0's per-channel terms: √(rv + ε) and the instance σ = 1/rstd.
            let (rsd, sd) = match rv {
                Some(rv) => scalar(b, feat, |l| {
                    let e = l.c(eps);
                    let rve = l.add(rv, e);
                    let one = l.c(1.0);
                    (Some(l.sqrt(rve)), Some(l.div(one, rstd)))
                }),
                None => (None, None),
            };
            let off = b.ins().imul_imm_s(ci, (s * 4) as i64);
            let xc = b.ins().iadd(xr, off);
            let yc = b.ins().iadd(yr, off);
            inner_loop(b, s, &|b, vector, i| {
                let v = load(b, vector, xc, i);
                let mut l = Lanes::new(b, vector, feat.fma);
                let y = match mode {
                    GroupMode::Norm => {
                        let d = centre(&mut l, v, (hi, lo));
                        let sc = l.splat(scale);
                        let bb = l.splat(bv);
                        l.mul_add(d, sc, bb)
                    }
                    GroupMode::EvoS0 => {
                        let vs = l.splat(vv.expect("EvoS0 has v"));
                        let vx = l.mul(vs, v);
                        let sg = l.sigmoid(vx);
                        let h = l.mul(v, sg);
                        let g = l.splat(gv);
                        let r = l.splat(rstd);
                        let gr = l.mul(g, r);
                        let bb = l.splat(bv);
                        l.mul_add(h, gr, bb)
                    }
                    GroupMode::EvoB0 => {
                        let vs = l.splat(vv.expect("EvoB0 has v"));
                        let sds = l.splat(sd.expect("EvoB0 has σ"));
                        let inst = l.mul_add(vs, v, sds);
                        let run = l.splat(rsd.expect("EvoB0 has rv"));
                        let den = l.max(run, inst);
                        let h = l.div(v, den);
                        let g = l.splat(gv);
                        let bb = l.splat(bv);
                        l.mul_add(h, g, bb)
                    }
                };
                store(b, y, yc, i);
            });
        });
    })
}

/// PowerNorm at inference with GroupScaling: rows of `cpg` contiguous values (one group of one
/// token); GS = x/√(mean(x²) + group_eps), then y = γ_c·GS/√(φ_c + ε) + β_c with c = g·cpg + i,
/// g = row mod `groups`. Arguments: `[out, x, γ, β, φ]`, each parameter of `groups·cpg`.
pub fn power_norm(
    jit: &mut Jit,
    name: &str,
    groups: usize,
    cpg: usize,
    eps: f32,
    group_eps: f32,
) -> Result<(), String> {
    row_kernel(jit, name, cpg, cpg, 3, move |b, feat, row| {
        let (xr, yr, gamma, beta, phi) = (row.x, row.y, row.params[0], row.params[1], row.params[2]);
        // GS = x·(1/√(mean x² + group_eps)): the RMS statistic.
        let ss = sum_sq_dev(b, feat, xr, cpg, None);
        let gs = rstd(b, feat, ss, cpg, group_eps);
        let g = b.ins().urem_imm_s(row.row, groups as i64);
        let poff = b.ins().imul_imm_s(g, (cpg * 4) as i64);
        let (gp, bp, pp) = (b.ins().iadd(gamma, poff), b.ins().iadd(beta, poff), b.ins().iadd(phi, poff));
        inner_loop(b, cpg, &|b, vector, i| {
            let v = load(b, vector, xr, i);
            let gv = load(b, vector, gp, i);
            let bv = load(b, vector, bp, i);
            let pv = load(b, vector, pp, i);
            let mut l = Lanes::new(b, vector, feat.fma);
            let gss = l.splat(gs);
            let h = l.mul(v, gss);
            let e = l.c(eps);
            let pe = l.add(pv, e);
            let sd = l.sqrt(pe);
            let scale = l.div(gv, sd);
            let y = l.mul_add(h, scale, bv);
            store(b, y, yr, i);
        });
    })
}

#[cfg(test)]
mod tests {
    use crate::jit::{HostFeatures, Jit};
    use kiln_ir::ReduceKind;

    /// Issue 11: a row of 2²⁹ + 3 floats (2 GiB + 12 bytes) summed by the row kernel; its scalar
    /// tail used to address element 2²⁹ at the i32 byte offset −2³¹ (SIGSEGV or garbage). The row
    /// is zero-initialised virtual memory (calloc maps it lazily and reads of untouched pages hit
    /// the shared zero page), so the test needs 2 GiB of address space but only a few pages of RAM;
    /// it takes about a second. Where the address space is refused it says so and checks nothing.
    #[test]
    fn row_longer_than_2_pow_29_floats_reads_its_tail() {
        let n = (1usize << 29) + 3;
        let layout = std::alloc::Layout::array::<f32>(n).unwrap();
        // SAFETY: a non-zero-size layout; the pointer is checked for null and freed below.
        let p = unsafe { std::alloc::alloc_zeroed(layout) } as *mut f32;
        if p.is_null() {
            eprintln!("skipped: 2 GiB of address space for the row was refused");
            return;
        }
        // SAFETY: p holds n zeroed f32.
        let x = unsafe { std::slice::from_raw_parts_mut(p, n) };
        x[0] = 5.0;
        x[n - 3] = 1.0;
        x[n - 2] = 2.0;
        x[n - 1] = 3.0;
        let mut jit = Jit::new(HostFeatures::detect()).unwrap();
        super::reduce_rows(&mut jit, "sum", n, ReduceKind::Sum).unwrap();
        let (f, _mem) = jit.finish().unwrap();
        let mut out = [0f32];
        let args = [out.as_mut_ptr() as *mut u8, p as *mut u8];
        // SAFETY: one row of n floats at p, one output float.
        unsafe { (f[0].func)(args.as_ptr(), 0, 1) };
        // SAFETY: allocated above with this layout.
        unsafe { std::alloc::dealloc(p as *mut u8, layout) };
        assert_eq!(out[0], 11.0);
    }
}
