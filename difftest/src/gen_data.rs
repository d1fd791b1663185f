//! Generator steps for the reductions, index and along-axis ops of issue 12: ReduceMin,
//! ReduceProd, ArgMax/ArgMin, CumSum, TopK, Tile, GatherElements, GatherND, ScatterND,
//! ScatterElements.
//!
//! What keeps them comparable across engines: ArgMax/ArgMin and TopK read only exact operands
//! (a rounding difference between engines would flip a near tie and so an index); ReduceProd reads
//! fresh values in [0.8, 1.25], whose products stay far from f32 overflow and underflow for any
//! reduced count here (the JIT multiplies in f32, the interpreter in f64); i64 CumSum and
//! ReduceProd read fresh values in [−1, 1] (an overflow is an interpreter error, which the
//! checker counts as a generator failure); indices are fresh and valid, negative ones included
//! (out-of-range indices are codegen/tests/jit_data_ops.rs's).

use super::{Gen, Val};
use crate::rng::Source;
use kiln_ir::{DType, Op, ReduceKind, ScatterReduction, Tensor, TensorType};

const REDUCTIONS: &[ScatterReduction] = &[
    ScatterReduction::None,
    ScatterReduction::Add,
    ScatterReduction::Mul,
    ScatterReduction::Max,
    ScatterReduction::Min,
];

impl<C: Source> Gen<'_, C> {
    /// One of the ops above on operands that suit it.
    pub(super) fn data_op(&mut self) -> Option<Val> {
        match self.c.below(10) {
            0 => self.reduce_min_prod(),
            1 | 2 => self.arg_or_topk(),
            3 => self.cumsum(),
            4 => self.tile(),
            5 | 6 => self.gather_scatter_elements(),
            _ => self.gather_scatter_nd(),
        }
    }

    /// An exact operand (f32 or i64) of rank 1..=4, small enough to sort.
    fn exact_operand(&mut self) -> Val {
        let fits = |v: &Val| v.exact && v.ty.dtype != DType::Bool && (1..=4).contains(&v.ty.rank());
        match self.pick_where(|v| fits(v) && v.ty.num_elements() <= 50_000) {
            Some(v) if self.c.chance(70) => v,
            _ => {
                let s = self.shape(1, 4);
                let dtype = if self.c.chance(25) { DType::I64 } else { DType::F32 };
                self.new_input(dtype, s)
            }
        }
    }

    /// An axis of a rank-`r` tensor, negative in some cases.
    fn axis(&mut self, r: usize) -> i64 {
        let a = self.c.below(r) as i64;
        if self.c.chance(40) { a - r as i64 } else { a }
    }

    fn reduce_min_prod(&mut self) -> Option<Val> {
        let prod = self.c.chance(50);
        let x = if prod {
            let s = self.shape(1, 4);
            if self.c.chance(20) {
                self.small_ints(&s)?
            } else {
                let t = self.f32_tensor_in(&s, 0.8, 1.25);
                self.add_input(t)
            }
        } else if self.c.chance(25) {
            self.int_operand()
        } else {
            self.pick_or_new_f32(1, 4)
        };
        let r = x.ty.rank();
        if r == 0 {
            return None;
        }
        let axes = match self.c.below(4) {
            0 => None,
            1 => Some(vec![]),
            _ => {
                let mut axes: Vec<i64> = (0..r as i64).filter(|_| self.c.chance(50)).collect();
                if axes.is_empty() {
                    axes.push(self.axis(r));
                }
                Some(axes)
            }
        };
        let kind = if prod { ReduceKind::Prod } else { ReduceKind::Min };
        let op = Op::Reduce { kind, axes, keepdims: self.c.chance(50), noop_with_empty_axes: self.c.chance(20) };
        let exact = x.exact && kind == ReduceKind::Min;
        self.emit1(op, &[&x], exact)
    }

    fn arg_or_topk(&mut self) -> Option<Val> {
        let x = self.exact_operand();
        let r = x.ty.rank();
        let axis = self.axis(r);
        if self.c.chance(50) {
            let op = Op::ArgReduce {
                max: self.c.chance(50),
                axis,
                keepdims: self.c.chance(50),
                select_last_index: self.c.chance(30),
            };
            return self.emit1(op, &[&x], true);
        }
        let d = x.ty.shape[axis.rem_euclid(r as i64) as usize];
        let k = self.c.range(1, d);
        let op = Op::TopK { k, axis, largest: self.c.chance(60), sorted: true };
        let outs = self.emit(op, &[&x], true)?;
        outs.into_iter().next()
    }

    /// A fresh i64 input with values in [−1, 1]: no product or running sum overflows.
    fn small_ints(&mut self, s: &[usize]) -> Option<Val> {
        let n: usize = s.iter().product();
        let t = Tensor::from_i64(s.to_vec(), (0..n).map(|_| self.v.below(3) as i64 - 1).collect()).ok()?;
        Some(self.add_input(t))
    }

    fn cumsum(&mut self) -> Option<Val> {
        let x = if self.c.chance(20) {
            let s = self.shape(1, 4);
            self.small_ints(&s)?
        } else {
            self.pick_or_new_f32(1, 4)
        };
        let r = x.ty.rank();
        if r == 0 {
            return None;
        }
        let op = Op::CumSum { axis: self.axis(r), exclusive: self.c.chance(40), reverse: self.c.chance(40) };
        let exact = x.exact && x.ty.dtype == DType::I64;
        self.emit1(op, &[&x], exact)
    }

    fn tile(&mut self) -> Option<Val> {
        let x = self.any_operand();
        if x.ty.rank() == 0 || x.ty.num_elements() > 20_000 {
            return None;
        }
        let repeats: Vec<usize> = (0..x.ty.rank()).map(|_| self.c.pick(&[1, 1, 2, 3])).collect();
        let exact = x.exact;
        self.emit1(Op::Tile { repeats }, &[&x], exact)
    }

    /// Index values for an axis of `d`: uniform over [−d, d).
    fn index_tensor(&mut self, shape: &[usize], dims: &dyn Fn(usize) -> usize) -> Option<Val> {
        let n: usize = shape.iter().product();
        let v: Vec<i64> = (0..n)
            .map(|k| {
                let d = dims(k) as i64;
                self.v.below(2 * d as usize) as i64 - d
            })
            .collect();
        let t = Tensor::from_i64(shape.to_vec(), v).ok()?;
        Some(if self.c.chance(50) { self.add_weight(t) } else { self.add_input(t) })
    }

    /// Updates of a type and shape for a scatter into `data`.
    fn updates(&mut self, data: &TensorType, shape: &[usize]) -> Val {
        match data.dtype {
            DType::F32 => self.new_operand(shape.to_vec()),
            other => self.new_input(other, shape.to_vec()),
        }
    }

    fn gather_scatter_elements(&mut self) -> Option<Val> {
        let data = self.any_operand();
        let r = data.ty.rank();
        if r == 0 {
            return None;
        }
        let axis = self.axis(r);
        let a = axis.rem_euclid(r as i64) as usize;
        let ishape: Vec<usize> =
            (0..r).map(|j| if j == a { self.c.range(1, 6) } else { self.c.range(1, data.ty.shape[j]) }).collect();
        let d = data.ty.shape[a];
        let idx = self.index_tensor(&ishape, &|_| d)?;
        if self.c.chance(50) {
            let exact = data.exact;
            return self.emit1(Op::GatherElements { axis }, &[&data, &idx], exact);
        }
        let reduction = if data.ty.dtype == DType::Bool { ScatterReduction::None } else { self.c.pick(REDUCTIONS) };
        let upd = self.updates(&data.ty, &ishape);
        // Add and Mul of duplicates apply in the same order in every engine: no reordering error.
        let exact = data.exact
            && upd.exact
            && matches!(reduction, ScatterReduction::None | ScatterReduction::Max | ScatterReduction::Min);
        self.emit1(Op::ScatterElements { axis, reduction }, &[&data, &idx, &upd], exact)
    }

    fn gather_scatter_nd(&mut self) -> Option<Val> {
        let data = self.any_operand();
        let r = data.ty.rank();
        if r == 0 {
            return None;
        }
        let gather = self.c.chance(50);
        let b = if gather { self.c.below(r) } else { 0 };
        let last = self.c.range(1, r - b);
        let mut ishape: Vec<usize> = data.ty.shape[..b].to_vec();
        if self.c.chance(70) {
            ishape.push(self.c.range(1, 4));
        }
        ishape.push(last);
        let dshape = data.ty.shape.clone();
        let idx = self.index_tensor(&ishape, &|k| dshape[b + k % last])?;
        let exact = data.exact;
        if gather {
            return self.emit1(Op::GatherND { batch_dims: b }, &[&data, &idx], exact);
        }
        let mut ushape = ishape[..ishape.len() - 1].to_vec();
        ushape.extend_from_slice(&data.ty.shape[last..]);
        let reduction = if data.ty.dtype == DType::Bool { ScatterReduction::None } else { self.c.pick(REDUCTIONS) };
        let upd = self.updates(&data.ty, &ushape);
        let exact = exact
            && upd.exact
            && matches!(reduction, ScatterReduction::None | ScatterReduction::Max | ScatterReduction::Min);
        self.emit1(Op::ScatterND { reduction }, &[&data, &idx, &upd], exact)
    }
}
