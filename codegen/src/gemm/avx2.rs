//! The AVX2+FMA micro-kernel: an `R×16` tile (R ≤ 6) in `2R` ymm accumulators; per k step two
//! loads of B, R broadcasts of A and 2R FMAs (6×16: 12 accumulators + 2 B vectors + 1 broadcast
//! of the 16 registers). Selected at run time (`Kernel::for_isa`), never by the build's target-cpu.

use super::conv::StorePost;
use super::{MR, NR, Tile};
use std::arch::x86_64::*;

/// # Safety
/// The CPU has AVX2 and FMA; `a` holds `kc·MR` floats, `b` `kc·NR`, `c` the tile's rows and
/// columns.
pub(super) unsafe fn dispatch(t: &Tile, a: *const f32, b: *const f32, c: *mut f32) {
    // SAFETY: per this function's contract.
    unsafe {
        match t.rows {
            1 => kernel::<1, false, 0>(t, a, b, std::ptr::null(), c, &StorePost::NONE),
            2 => kernel::<2, false, 0>(t, a, b, std::ptr::null(), c, &StorePost::NONE),
            3 => kernel::<3, false, 0>(t, a, b, std::ptr::null(), c, &StorePost::NONE),
            4 => kernel::<4, false, 0>(t, a, b, std::ptr::null(), c, &StorePost::NONE),
            5 => kernel::<5, false, 0>(t, a, b, std::ptr::null(), c, &StorePost::NONE),
            _ => kernel::<6, false, 0>(t, a, b, std::ptr::null(), c, &StorePost::NONE),
        }
    }
}

/// As [`dispatch`], with B row p read at `b + offs[p]` (16 floats) instead of a packed panel.
///
/// # Safety
/// As [`dispatch`]; `offs` holds `kc` offsets, each with 16 readable floats at `b + offset`.
pub(super) unsafe fn dispatch_indirect(t: &Tile, a: *const f32, b: *const f32, offs: *const usize, c: *mut f32) {
    // SAFETY: per this function's contract.
    unsafe {
        match t.rows {
            1 => kernel::<1, true, 0>(t, a, b, offs, c, &StorePost::NONE),
            2 => kernel::<2, true, 0>(t, a, b, offs, c, &StorePost::NONE),
            3 => kernel::<3, true, 0>(t, a, b, offs, c, &StorePost::NONE),
            4 => kernel::<4, true, 0>(t, a, b, offs, c, &StorePost::NONE),
            5 => kernel::<5, true, 0>(t, a, b, offs, c, &StorePost::NONE),
            _ => kernel::<6, true, 0>(t, a, b, offs, c, &StorePost::NONE),
        }
    }
}

/// As [`dispatch`] (`offs` null) or [`dispatch_indirect`], with `post` applied to each value as
/// it is stored (a conv's residual Add and Relu).
///
/// # Safety
/// As those; a non-null `post.res` holds the tile's rows and columns at C's stride.
pub(super) unsafe fn dispatch_post(
    t: &Tile,
    a: *const f32,
    b: *const f32,
    offs: *const usize,
    c: *mut f32,
    post: &StorePost,
) {
    // SAFETY: per this function's contract.
    unsafe {
        match (offs.is_null(), post.clip) {
            (true, false) => by_rows::<false, 1>(t, a, b, offs, c, post),
            (false, false) => by_rows::<true, 1>(t, a, b, offs, c, post),
            (true, true) => by_rows::<false, 2>(t, a, b, offs, c, post),
            (false, true) => by_rows::<true, 2>(t, a, b, offs, c, post),
        }
    }
}

/// [`kernel`] for `t.rows`, with the Post mode `POST` (see there).
///
/// # Safety
/// As [`kernel`].
#[inline(always)]
unsafe fn by_rows<const IND: bool, const POST: u8>(
    t: &Tile,
    a: *const f32,
    b: *const f32,
    offs: *const usize,
    c: *mut f32,
    post: &StorePost,
) {
    // SAFETY: per this function's contract.
    unsafe {
        match t.rows {
            1 => kernel::<1, IND, POST>(t, a, b, offs, c, post),
            2 => kernel::<2, IND, POST>(t, a, b, offs, c, post),
            3 => kernel::<3, IND, POST>(t, a, b, offs, c, post),
            4 => kernel::<4, IND, POST>(t, a, b, offs, c, post),
            5 => kernel::<5, IND, POST>(t, a, b, offs, c, post),
            _ => kernel::<6, IND, POST>(t, a, b, offs, c, post),
        }
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn kernel<const R: usize, const IND: bool, const POST: u8>(
    t: &Tile,
    a: *const f32,
    b: *const f32,
    offs: *const usize,
    c: *mut f32,
    post: &StorePost,
) {
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    let (mut ap, mut bp) = (a, b);
    for p in 0..t.kc {
        // SAFETY: p < kc: B's row p (NR floats, packed or at b + offs[p]) and A's column p (MR
        // floats) are readable.
        unsafe {
            let row = if IND {
                b.add(*offs.add(p))
            } else {
                let row = bp;
                bp = bp.add(NR);
                row
            };
            let b0 = _mm256_loadu_ps(row);
            let b1 = _mm256_loadu_ps(row.add(8));
            for (i, row) in acc.iter_mut().enumerate() {
                let av = _mm256_broadcast_ss(&*ap.add(i));
                row[0] = _mm256_fmadd_ps(av, b0, row[0]);
                row[1] = _mm256_fmadd_ps(av, b1, row[1]);
            }
            ap = ap.add(MR);
        }
    }
    let alpha = _mm256_set1_ps(t.alpha);
    let beta = _mm256_set1_ps(t.beta);
    // The Post's parts, read once. `POST`: 0 none, 1 the residual and Relu, 2 also the Clip; each
    // instance has only its own code (as the AVX-512 kernel's).
    let res = if POST > 0 { post.res } else { std::ptr::null() };
    let (relu, clip) = (POST > 0 && post.relu, POST > 1 && post.clip);
    let (lo, hi) = if POST > 1 {
        (_mm256_set1_ps(post.lo), _mm256_set1_ps(post.hi))
    } else {
        (_mm256_setzero_ps(), _mm256_setzero_ps())
    };
    for (i, row) in acc.iter().enumerate() {
        // SAFETY: row i < rows is inside C (caller).
        let cr = unsafe { c.offset(i as isize * t.c_rs) };
        // SAFETY: a non-null bias holds one float per tile row (Tile::bias).
        let bias = if t.load_c || t.bias.is_null() { None } else { Some(unsafe { *t.bias.add(i) }) };
        if t.cols == NR {
            for (h, &v) in row.iter().enumerate() {
                // SAFETY: columns [0, 16) are inside C (and the residual, when post has one).
                unsafe {
                    let d = cr.add(8 * h);
                    let v = if t.load_c {
                        _mm256_fmadd_ps(beta, _mm256_loadu_ps(d), _mm256_mul_ps(alpha, v))
                    } else if let Some(b) = bias {
                        _mm256_add_ps(_mm256_mul_ps(alpha, v), _mm256_set1_ps(b))
                    } else {
                        _mm256_mul_ps(alpha, v)
                    };
                    // The residual (rounded add), then the interpreter's Relu: v > 0 or NaN
                    // keeps v, else +0 (−0 included).
                    let v = if res.is_null() {
                        v
                    } else {
                        _mm256_add_ps(v, _mm256_loadu_ps(res.offset(i as isize * t.c_rs).add(8 * h)))
                    };
                    let v =
                        if relu { _mm256_and_ps(_mm256_cmp_ps::<_CMP_NLE_UQ>(v, _mm256_setzero_ps()), v) } else { v };
                    // The interpreter's Clip: vmaxps/vminps return their second operand when
                    // the first is not greater/less (NaN, equal: −0 kept).
                    let v = if clip { _mm256_min_ps(hi, _mm256_max_ps(lo, v)) } else { v };
                    _mm256_storeu_ps(d, v);
                }
            }
        } else {
            // An edge tile: only `cols` columns exist in C.
            let mut tmp = [0.0f32; NR];
            // SAFETY: tmp holds 16 floats.
            unsafe {
                _mm256_storeu_ps(tmp.as_mut_ptr(), row[0]);
                _mm256_storeu_ps(tmp.as_mut_ptr().add(8), row[1]);
            }
            for (j, &x) in tmp[..t.cols].iter().enumerate() {
                // SAFETY: column j < cols is inside C (and the residual, when post has one).
                unsafe {
                    let d = cr.add(j);
                    let mut v = match bias {
                        _ if t.load_c => t.beta.mul_add(*d, t.alpha * x),
                        Some(b) => t.alpha * x + b,
                        None => t.alpha * x,
                    };
                    if !res.is_null() {
                        v += *res.offset(i as isize * t.c_rs).add(j);
                    }
                    if relu && !(v > 0.0 || v.is_nan()) {
                        v = 0.0;
                    }
                    if clip {
                        v = super::conv::clip1(v, post.lo, post.hi);
                    }
                    *d = v;
                }
            }
        }
    }
}
