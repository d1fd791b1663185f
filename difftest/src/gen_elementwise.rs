//! Generator steps for issue 12's elementwise ops: trigonometric and hyperbolic functions, the
//! activations, rounding, Sign, IsNaN/IsInf, the comparisons, Mod, PRelu, and bool logic.
//!
//! The rules that keep a case's expected difference within the checker's tolerances (see
//! `check.rs`): an op that jumps (Floor, Ceil, Round, Sign, ThresholdedRelu, Shrink, a comparison,
//! IsNaN/IsInf, fmod) reads only exact operands, since a last-bit difference in a computed operand
//! moves it across the jump; so do the functions with a domain edge (Asin, Acos, Atanh, Acosh),
//! where such a difference is NaN on one side. Sin, Cos and Tan read fresh operands within ±100
//! (and the specials): the JIT's range reduction is accurate to a few ulp there (math_tests.rs
//! measures it), and a computed argument of large magnitude carries an absolute error that the
//! periodic function turns into an O(1) difference in either engine's result.

use super::{Gen, Val};
use crate::rng::Source;
use kiln_ir::{BinaryOp, DType, Op, Tensor, TensorType, UnaryOp};

impl<C: Source> Gen<'_, C> {
    /// One node of an issue-12 elementwise op.
    pub(super) fn elementwise_issue12(&mut self) -> Option<Val> {
        match self.c.below(10) {
            0..=1 => self.smooth_unary(),
            2 => self.trig(),
            3 => self.domain_unary(),
            4..=5 => self.jump_unary(),
            6 => self.compare_more(),
            7 => self.modulo(),
            8 => self.prelu(),
            _ => self.logic(),
        }
    }

    /// Continuous everywhere: any operand.
    fn smooth_unary(&mut self) -> Option<Val> {
        let x = self.pick_or_new_f32(0, 4);
        let op = self.c.pick(&[
            UnaryOp::Sinh,
            UnaryOp::Cosh,
            UnaryOp::Atan,
            UnaryOp::Asinh,
            UnaryOp::Softplus,
            UnaryOp::Softsign,
            UnaryOp::Mish,
            UnaryOp::HardSwish,
            UnaryOp::HardSigmoid { alpha: 0.2, beta: 0.5 },
            UnaryOp::HardSigmoid { alpha: -0.5, beta: 0.25 },
            UnaryOp::Elu { alpha: 1.0 },
            UnaryOp::Elu { alpha: 0.3 },
            UnaryOp::Celu { alpha: 1.0 },
            UnaryOp::Celu { alpha: 2.5 },
        ]);
        self.emit1(Op::Unary(op), &[&x], false)
    }

    /// A fresh f32 operand of `shape` with values in [lo, hi), some of them special in special cases.
    fn fresh_in(&mut self, shape: Vec<usize>, lo: f32, hi: f32) -> Val {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n)
            .map(|_| {
                if self.special && self.v.chance(12) {
                    self.v.pick(&[f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, 1e-39, -1e-30])
                } else {
                    self.v.f32_in(lo, hi)
                }
            })
            .collect();
        let t = Tensor::from_f32(shape.clone(), data).unwrap_or_else(|_| Tensor::zeros(&TensorType::f32(shape)));
        if self.c.chance(50) { self.add_weight(t) } else { self.add_input(t) }
    }

    fn trig(&mut self) -> Option<Val> {
        let s = self.shape(0, 4);
        let (lo, hi) = self.c.pick(&[(-4.0f32, 4.0f32), (-100.0, 100.0)]);
        let x = self.fresh_in(s, lo, hi);
        let op = self.c.pick(&[UnaryOp::Sin, UnaryOp::Cos, UnaryOp::Sin, UnaryOp::Cos, UnaryOp::Tan]);
        self.emit1(Op::Unary(op), &[&x], false)
    }

    fn domain_unary(&mut self) -> Option<Val> {
        let s = self.shape(0, 4);
        let (op, lo, hi) = self.c.pick(&[
            (UnaryOp::Asin, -1.2f32, 1.2f32),
            (UnaryOp::Acos, -1.2, 1.2),
            (UnaryOp::Atanh, -1.2, 1.2),
            (UnaryOp::Acosh, 0.5, 20.0),
        ]);
        let x = self.fresh_in(s, lo, hi);
        self.emit1(Op::Unary(op), &[&x], false)
    }

    fn jump_unary(&mut self) -> Option<Val> {
        let s = self.shape(0, 4);
        let x = self.exact_f32_operand(&s);
        let op = self.c.pick(&[
            UnaryOp::Floor,
            UnaryOp::Ceil,
            UnaryOp::Round,
            UnaryOp::Sign,
            UnaryOp::ThresholdedRelu { alpha: 1.0 },
            UnaryOp::ThresholdedRelu { alpha: -0.5 },
            UnaryOp::Shrink { bias: 0.0, lambd: 0.5 },
            UnaryOp::Shrink { bias: 1.5, lambd: 1.0 },
            UnaryOp::IsNaN,
            UnaryOp::IsInf { positive: true, negative: true },
            UnaryOp::IsInf { positive: false, negative: true },
        ]);
        // Rounding and Sign of an exact value are exact; the rest are not exact in general.
        let exact = matches!(op, UnaryOp::Floor | UnaryOp::Ceil | UnaryOp::Round | UnaryOp::Sign);
        self.emit1(Op::Unary(op), &[&x], exact)
    }

    /// Greater, GreaterOrEqual, LessOrEqual on exact f32 or on i64.
    fn compare_more(&mut self) -> Option<Val> {
        let x = self.pick_where(|v| v.exact && v.ty.dtype != DType::Bool)?;
        let s = self.broadcast_of(&x.ty.shape);
        let t = self.tensor(x.ty.dtype, &s);
        let y = self.add_weight(t);
        let op = self.c.pick(&[BinaryOp::Greater, BinaryOp::GreaterOrEqual, BinaryOp::LessOrEqual]);
        let (a, b) = if self.c.chance(50) { (&x, &y) } else { (&y, &x) };
        self.emit1(Op::Binary(op), &[a, b], true)
    }

    /// Mod: floor-mod and fmod on i64 (divisors never 0: that is an evaluation error) and on
    /// exact f32.
    fn modulo(&mut self) -> Option<Val> {
        let fmod = self.c.chance(50);
        if self.c.chance(50) {
            let x = self.int_operand();
            let s = self.broadcast_of(&x.ty.shape);
            let n: usize = s.iter().product();
            let d: Vec<i64> = (0..n).map(|_| self.v.pick(&[1, 2, 3, -1, -2, 7, -5, i64::MAX])).collect();
            let y = self.add_weight(Tensor::from_i64(s, d).ok()?);
            self.emit1(Op::Binary(BinaryOp::Mod { fmod }), &[&x, &y], true)
        } else {
            let s = self.shape(0, 4);
            let x = self.exact_f32_operand(&s);
            let ys = self.broadcast_of(&s);
            let y = self.exact_f32_operand(&ys);
            self.emit1(Op::Binary(BinaryOp::Mod { fmod }), &[&x, &y], true)
        }
    }

    /// PRelu with a slope that broadcasts to x (per channel, per last axis or scalar).
    fn prelu(&mut self) -> Option<Val> {
        let x = self.pick_or_new_f32(0, 4);
        let s = self.broadcast_within(&x.ty.shape);
        let slope = self.new_operand(s);
        self.emit1(Op::Binary(BinaryOp::PRelu), &[&x, &slope], false)
    }

    /// Not, And, Or, Xor and Equal on bool tensors.
    fn logic(&mut self) -> Option<Val> {
        let s = self.shape(0, 4);
        let a = self.bool_operand(&s);
        if self.c.chance(25) {
            return self.emit1(Op::Unary(UnaryOp::Not), &[&a], true);
        }
        let b = self.bool_operand(&a.ty.shape.clone());
        let op = self.c.pick(&[BinaryOp::And, BinaryOp::Or, BinaryOp::Xor, BinaryOp::Equal]);
        self.emit1(Op::Binary(op), &[&a, &b], true)
    }
}
