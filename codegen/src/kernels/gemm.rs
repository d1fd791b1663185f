//! A register-blocked Cranelift GEMM micro-kernel, kept to measure against the `gemm` crate (see
//! `benches/kernels.rs`); the plan calls the crate because it measured faster (report in the
//! bench's header). C[m×n] = A[m×k]·B[k×n], row-major, one row block of 4 rows per kernel row,
//! 4×8 tile: eight f32x4 accumulators, A broadcast, two B vectors per k. Needs m % 4 == 0 and
//! n % 8 == 0; no packing or cache blocking.

use super::loops::{RowLoop, const_offset, counted, load_arg_ptr};
use crate::jit::Jit;
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, types};

/// Arguments: `[c, a, b]`; rows are blocks of 4 rows of C.
pub fn define(jit: &mut Jit, name: &str, m: usize, k: usize, n: usize) -> Result<(), String> {
    if !m.is_multiple_of(4) || !n.is_multiple_of(8) {
        return Err("the Cranelift GEMM kernel needs m % 4 == 0 and n % 8 == 0".into());
    }
    jit.define(name, move |b, [args, start, end], feat| {
        let flags = MemFlagsData::new().with_notrap();
        let c = load_arg_ptr(b, args, 0);
        let a = load_arg_ptr(b, args, 1);
        let bm = load_arg_ptr(b, args, 2);
        let rl = RowLoop::begin(b, start, end);
        let a_blk = b.ins().imul_imm_s(rl.row, (4 * k * 4) as i64);
        let a_blk = b.ins().iadd(a, a_blk);
        let c_blk = b.ins().imul_imm_s(rl.row, (4 * n * 4) as i64);
        let c_blk = b.ins().iadd(c, c_blk);
        let zero = b.ins().iconst(types::I64, 0);
        let n_end = b.ins().iconst(types::I64, n as i64);
        counted(b, zero, n_end, 8, &mut |b, j| {
            let zf = b.ins().f32const(0.0);
            let zv = b.ins().splat(types::F32X4, zf);
            let acc: Vec<_> = (0..8).map(|_| b.declare_var(types::F32X4)).collect();
            for &v in &acc {
                b.def_var(v, zv);
            }
            let jb = b.ins().ishl_imm_s(j, 2);
            let b_col = b.ins().iadd(bm, jb);
            let zero = b.ins().iconst(types::I64, 0);
            let k_end = b.ins().iconst(types::I64, k as i64);
            counted(b, zero, k_end, 1, &mut |b, p| {
                let boff = b.ins().imul_imm_s(p, (n * 4) as i64);
                let brow = b.ins().iadd(b_col, boff);
                let b0 = b.ins().load(types::F32X4, flags, brow, 0);
                let b1 = b.ins().load(types::F32X4, flags, brow, 16);
                let aoff = b.ins().ishl_imm_s(p, 2);
                let acol = b.ins().iadd(a_blk, aoff);
                for r in 0..4 {
                    let (addr, imm) = const_offset(b, acol, r * k * 4);
                    let x = b.ins().load(types::F32, flags, addr, imm);
                    let xv = b.ins().splat(types::F32X4, x);
                    for (h, bv) in [b0, b1].into_iter().enumerate() {
                        let v = acc[r * 2 + h];
                        let cur = b.use_var(v);
                        let nv = if feat.fma {
                            b.ins().fma(xv, bv, cur)
                        } else {
                            let t = b.ins().fmul(xv, bv);
                            b.ins().fadd(t, cur)
                        };
                        b.def_var(v, nv);
                    }
                }
            });
            let coff = b.ins().ishl_imm_s(j, 2);
            let ccol = b.ins().iadd(c_blk, coff);
            for r in 0..4 {
                for h in 0..2 {
                    let v = b.use_var(acc[r * 2 + h]);
                    let (addr, imm) = const_offset(b, ccol, r * n * 4 + h * 16);
                    b.ins().store(flags, v, addr, imm);
                }
            }
        });
        rl.end(b);
    })
}

#[cfg(test)]
mod tests {
    use crate::jit::{HostFeatures, Jit};

    #[test]
    fn matches_naive_product() {
        let (m, k, n) = (8, 13, 16);
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 - 3.0).collect();
        let bm: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 - 2.0).collect();
        let mut jit = Jit::new(HostFeatures::detect()).unwrap();
        super::define(&mut jit, "g", m, k, n).unwrap();
        let (f, _mem) = jit.finish().unwrap();
        let mut c = vec![0f32; m * n];
        let args = [c.as_mut_ptr() as *mut u8, a.as_ptr() as *mut u8, bm.as_ptr() as *mut u8];
        // SAFETY: buffers have the sizes the kernel was generated for.
        unsafe { (f[0].func)(args.as_ptr(), 0, (m / 4) as i64) };
        for i in 0..m {
            for j in 0..n {
                let want: f32 = (0..k).map(|p| a[i * k + p] * bm[p * n + j]).sum();
                assert_eq!(c[i * n + j], want, "({i},{j})");
            }
        }
    }
}
