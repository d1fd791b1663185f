//! The packed sgemm against a naive f64 product, on every kernel this CPU can run.
//!
//! Tolerance: the classic bound for a length-k f32 dot product, `|got − exact| ≤ γ·(|α|·Σ|a·b| +
//! |β·c|)` with `γ = (k + 2)·ε` (k products and additions, the α scale and the β add, each one
//! rounding of relative size ε = 2⁻²⁴). It scales with k and the operands' magnitudes, so it
//! holds for any sizes, and a wrong element, row or column misses it by orders of magnitude.

use super::*;

/// Every ISA whose kernel this CPU runs: the portable one always, AVX2 and AVX-512 when present
/// (on an AVX-512 CPU both x86 kernels are tested, each with its own A panel height).
pub(crate) fn isas() -> Vec<Isa> {
    let mut v = vec![Isa::Generic];
    if Isa::supported(Isa::Avx2Fma) >= Isa::Avx2Fma {
        v.push(Isa::Avx2Fma);
    }
    if Isa::supported(Isa::Avx512) >= Isa::Avx512 {
        v.push(Isa::Avx512);
    }
    v
}

/// Deterministic values in [-1, 1) with a few larger ones.
fn data(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let x = (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
            if i % 97 == 0 { x * 30.0 } else { x }
        })
        .collect()
}

struct Case {
    m: usize,
    n: usize,
    k: usize,
    ta: bool,
    tb: bool,
    alpha: f32,
    beta: Option<f32>,
}

/// Runs the case split into `parts` row ranges or column-panel ranges and checks every element
/// and that `after` reported every row exactly once per range.
fn check(isa: Isa, cs: &Case, parts: usize, by_rows: bool) {
    let Case { m, n, k, ta, tb, alpha, beta } = *cs;
    let a = data(m * k, 1 + m as u64);
    let b = data(k * n, 2 + n as u64);
    let c0 = data(m * n, 3 + k as u64);
    // A stored [m,k] or (ta) [k,m]; B stored [k,n] or (tb) [n,k].
    let (a_rs, a_cs) = if ta { (1, m) } else { (k, 1) };
    let (b_rs, b_cs) = if tb { (1, k) } else { (n, 1) };
    let packed = PackedB::pack(&b, k, n, b_rs, b_cs).unwrap();
    let prod = Product {
        m,
        a_rs: a_rs as isize,
        a_cs: a_cs as isize,
        c_rs: n as isize,
        alpha,
        beta: beta.unwrap_or(0.0),
        accumulate: beta.is_some(),
    };
    let mut c = c0.clone();
    let mut seen = vec![0usize; m];
    for part in 0..parts {
        let (rows, panels) = if by_rows {
            let (lo, hi) = crate::pool::chunk(m, parts, part);
            (lo..hi, 0..packed.panels())
        } else {
            let (lo, hi) = crate::pool::chunk(packed.panels(), parts, part);
            (0..m, lo..hi)
        };
        let mut after = |r0: usize, r1: usize| seen[r0..r1].iter_mut().for_each(|s| *s += 1);
        // SAFETY: a, c hold m×k and m×n floats; ranges are inside them.
        unsafe { prod.run(isa, a.as_ptr(), &packed, c.as_mut_ptr(), rows, panels, &mut after) };
    }
    let expect_seen = if by_rows { 1 } else { parts };
    assert!(seen.iter().all(|&s| s == expect_seen), "after() coverage {seen:?}");
    let eps = f32::EPSILON as f64 / 2.0;
    for i in 0..m {
        for j in 0..n {
            let (mut exact, mut mag) = (0.0f64, 0.0f64);
            for p in 0..k {
                let x = a[i * a_rs + p * a_cs] as f64 * b[p * b_rs + j * b_cs] as f64;
                exact += x;
                mag += x.abs();
            }
            exact *= alpha as f64;
            mag *= (alpha as f64).abs();
            if let Some(beta) = beta {
                exact += beta as f64 * c0[i * n + j] as f64;
                mag += (beta as f64 * c0[i * n + j] as f64).abs();
            }
            let tol = (k + 2) as f64 * eps * mag + 1e-30;
            let got = c[i * n + j] as f64;
            assert!(
                (got - exact).abs() <= tol,
                "{isa} m={m} n={n} k={k} ta={ta} tb={tb} α={alpha} β={beta:?}: C[{i}][{j}] = {got}, \
                 expected {exact} ± {tol}"
            );
        }
    }
}

#[test]
fn odd_sizes_and_edge_tiles() {
    let sizes = [1, 7, 17, 255, 513];
    for isa in isas() {
        for &m in &sizes {
            for &n in &sizes {
                for &k in &[1, 7, 17, 255, 513] {
                    // Keep the f64 reference affordable: skip the largest cubes.
                    if m * n * k > 2_500_000 {
                        continue;
                    }
                    let cs = Case { m, n, k, ta: false, tb: false, alpha: 1.0, beta: None };
                    check(isa, &cs, 1, true);
                }
            }
        }
    }
}

/// Every tile height of every kernel (1 to 12 rows: one AVX-512 tile each, two AVX2 ones past
/// 6), over a full and a masked 16-column vector (n = 33: 16 + 16 + 1), stored with and without
/// C's old value: each row of the tile is written by its own unrolled copy of the store.
#[test]
fn every_tile_height() {
    for isa in isas() {
        for m in 1..=MR_MAX {
            for beta in [None, Some(-1.5)] {
                check(isa, &Case { m, n: 33, k: 5, ta: false, tb: false, alpha: 0.75, beta }, 1, true);
            }
        }
    }
}

#[test]
fn transposes_alpha_beta() {
    for isa in isas() {
        for (ta, tb) in [(false, true), (true, false), (true, true)] {
            for &(m, n, k) in &[(13, 37, 300), (6, 16, 256), (1, 33, 5), (70, 3, 513)] {
                check(isa, &Case { m, n, k, ta, tb, alpha: 1.0, beta: None }, 1, true);
                check(isa, &Case { m, n, k, ta, tb, alpha: -0.5, beta: Some(2.0) }, 1, true);
            }
        }
        check(isa, &Case { m: 20, n: 20, k: 20, ta: false, tb: false, alpha: 0.25, beta: Some(-1.0) }, 1, true);
    }
}

#[test]
fn zero_depth_scales_c() {
    for isa in isas() {
        check(isa, &Case { m: 5, n: 18, k: 0, ta: false, tb: false, alpha: 1.0, beta: Some(0.5) }, 1, true);
        check(isa, &Case { m: 5, n: 18, k: 0, ta: false, tb: false, alpha: 1.0, beta: None }, 1, true);
    }
}

#[test]
fn splits_by_rows_and_panels_match() {
    for isa in isas() {
        for parts in [2, 3] {
            for &(m, n, k) in &[(150, 70, 300), (7, 513, 17), (64, 100, 40)] {
                check(isa, &Case { m, n, k, ta: false, tb: false, alpha: 1.0, beta: None }, parts, true);
                check(isa, &Case { m, n, k, ta: false, tb: true, alpha: 1.0, beta: Some(1.0) }, parts, false);
            }
        }
    }
}

#[test]
fn split_results_are_bitwise_equal() {
    // The executor's contract is determinism per thread count; the kernel gives more: the same
    // bits whatever the split.
    let (m, n, k) = (100, 90, 600);
    let a = data(m * k, 7);
    let b = data(k * n, 8);
    let packed = PackedB::pack(&b, k, n, n, 1).unwrap();
    let prod = Product { m, a_rs: k as isize, a_cs: 1, c_rs: n as isize, alpha: 1.0, beta: 0.0, accumulate: false };
    for isa in isas() {
        let mut whole = vec![0.0f32; m * n];
        let mut split = vec![0.0f32; m * n];
        // SAFETY: buffers sized m×k, m×n.
        unsafe {
            prod.run(isa, a.as_ptr(), &packed, whole.as_mut_ptr(), 0..m, 0..packed.panels(), &mut |_, _| {});
            prod.run(isa, a.as_ptr(), &packed, split.as_mut_ptr(), 0..37, 0..packed.panels(), &mut |_, _| {});
            prod.run(isa, a.as_ptr(), &packed, split.as_mut_ptr(), 37..m, 0..2, &mut |_, _| {});
            prod.run(isa, a.as_ptr(), &packed, split.as_mut_ptr(), 37..m, 2..packed.panels(), &mut |_, _| {});
        }
        assert!(whole.iter().zip(&split).all(|(x, y)| x.to_bits() == y.to_bits()), "{isa}");
    }
}

#[test]
fn pack_refuses_a_short_operand() {
    let e = PackedB::pack(&[0.0; 11], 3, 4, 4, 1).unwrap_err();
    assert!(e.contains("does not fit"), "{e}");
    assert!(PackedB::pack(&[0.0; 12], 3, 4, 4, 1).is_ok());
}

#[test]
fn packing_in_place_gives_the_copying_packs_layout() {
    // Row-major B and Bᵀ (the two in-place layouts, n a multiple of NR, k not a multiple of 64 so
    // that the cycle bitmap's last word is partial), and layouts packed by copy: n not a multiple
    // of NR, padded strides. Bitwise equal: packing only moves floats.
    for (k, n) in [(1, 16), (5, 32), (67, 48), (130, 64)] {
        let b = data(k * n, (k * n) as u64);
        for (rs, cs) in [(n, 1), (1, k)] {
            let want = PackedB::pack(&b, k, n, rs, cs).unwrap();
            let got = PackedB::pack_owned(b.clone(), k, n, rs, cs).unwrap();
            assert_eq!((got.k, got.n), (k, n));
            assert!(got.data.iter().zip(&want.data).all(|(x, y)| x.to_bits() == y.to_bits()), "{k}×{n} ({rs}, {cs})");
            assert_eq!(got.data.len(), want.data.len());
        }
    }
    let (k, n) = (7, 20);
    let b = data(k * (n + 3), 3);
    for (rs, cs) in [(n + 3, 1), (1, k)] {
        let want = PackedB::pack(&b, k, n, rs, cs).unwrap();
        let got = PackedB::pack_owned(b.clone(), k, n, rs, cs).unwrap();
        assert!(got.data.iter().zip(&want.data).all(|(x, y)| x.to_bits() == y.to_bits()), "({rs}, {cs})");
    }
    // In place means in the same buffer.
    let b = data(64 * 32, 9);
    let at = b.as_ptr();
    assert_eq!(PackedB::pack_owned(b, 64, 32, 32, 1).unwrap().data.as_ptr(), at);
}

#[test]
fn k_past_one_span_of_a_blocks() {
    // K = 1100: five KC blocks, two spans of SB = 4 (the second span of one block, 76 deep).
    for isa in isas() {
        check(isa, &Case { m: 30, n: 40, k: 1100, ta: false, tb: false, alpha: 1.0, beta: Some(0.5) }, 1, true);
        check(isa, &Case { m: 13, n: 70, k: 1100, ta: true, tb: true, alpha: -2.0, beta: None }, 2, false);
    }
}

/// The AVX-512 kernel (12×32 tile over two packed panels, masked edges) computes every element
/// as the AVX2 kernel does (one FMA per k in order, then alpha and the beta FMA): the same bits,
/// at ragged shapes around both tiles (M, N, K not multiples of them, N = 1, K = 1), split by
/// rows and by an odd number of column panels (a call then pairs different panels).
#[test]
fn avx512_gives_the_avx2_kernels_bits() {
    if Isa::supported(Isa::Avx512) != Isa::Avx512 {
        return;
    }
    for &(m, n, k) in &[(1, 1, 1), (13, 33, 1), (25, 1, 257), (12, 32, 256), (37, 47, 300), (7, 65, 1030)] {
        let a = data(m * k, 11 + m as u64);
        let b = data(k * n, 12 + n as u64);
        let c0 = data(m * n, 13);
        let packed = PackedB::pack(&b, k, n, n, 1).unwrap();
        let prod =
            Product { m, a_rs: k as isize, a_cs: 1, c_rs: n as isize, alpha: 0.75, beta: -1.5, accumulate: true };
        let run = |isa: Isa, rows: std::ops::Range<usize>, panels: std::ops::Range<usize>, c: &mut Vec<f32>| {
            // SAFETY: a, c hold m×k and m×n floats; the ranges are inside them.
            unsafe { prod.run(isa, a.as_ptr(), &packed, c.as_mut_ptr(), rows, panels, &mut |_, _| {}) };
        };
        let mut want = c0.clone();
        run(Isa::Avx2Fma, 0..m, 0..packed.panels(), &mut want);
        let mut whole = c0.clone();
        run(Isa::Avx512, 0..m, 0..packed.panels(), &mut whole);
        let mut split = c0.clone();
        let (r, p) = (m / 2, packed.panels().min(1));
        run(Isa::Avx512, 0..r, 0..packed.panels(), &mut split);
        run(Isa::Avx512, r..m, 0..p, &mut split);
        run(Isa::Avx512, r..m, p..packed.panels(), &mut split);
        for (name, got) in [("whole", &whole), ("split", &split)] {
            let same = got.iter().zip(&want).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same, "{m}×{n}×{k} {name}: AVX-512 {got:?} != AVX2 {want:?}");
        }
    }
}
