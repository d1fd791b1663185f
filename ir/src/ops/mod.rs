//! Shape inference and reference evaluation for every op, one file per family. Each family file
//! handles its own variants of [`Op`]; this module only dispatches.
//!
//! `infer` validates input types (element types, ranks, broadcastability, attribute ranges against
//! shapes) and returns output types; it is the only validation an op gets, so anything `eval` relies
//! on must be checked here. `eval` is the reference semantics: plain loops, f64 accumulation in
//! reductions, clarity over speed.

use crate::dtype::TensorType;
use crate::op::Op;
use crate::tensor::Tensor;

pub mod broadcast;
mod conv;
pub use conv::{ConvTransposeShape, conv_transpose_shape, resize_nearest_sources};
mod elementwise;
mod fused;
mod index;
mod linalg;
mod movement;
mod norm;
mod pool;
pub use pool::{PoolAxis, pool_axes};
mod reduce;
mod resize;
pub use resize::{InterpAxis, resize_interp_axes};

/// The op families, one file each here and in codegen's lowering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Elementwise,
    Linalg,
    Conv,
    Pool,
    Resize,
    Norm,
    Reduce,
    Movement,
    Index,
    Fused,
}

/// Which family handles `op`.
pub fn family(op: &Op) -> Family {
    match op {
        Op::Unary(_) | Op::Binary(_) | Op::Where | Op::Cast { .. } | Op::Identity => Family::Elementwise,
        Op::MatMul | Op::Gemm { .. } => Family::Linalg,
        Op::Conv { .. } | Op::ConvTranspose { .. } | Op::Pad { .. } | Op::Resize { .. } => Family::Conv,
        Op::MaxPool(_) | Op::AveragePool { .. } | Op::LpPool { .. } => Family::Pool,
        Op::ResizeInterp { .. } => Family::Resize,
        Op::BatchNormalization { .. }
        | Op::LayerNormalization { .. }
        | Op::RmsNormalization { .. }
        | Op::GroupNormalization { .. }
        | Op::InstanceNormalization { .. }
        | Op::Softmax { .. }
        | Op::LogSoftmax { .. }
        | Op::UnifiedNorm { .. }
        | Op::PowerNorm { .. }
        | Op::EvoNormS0 { .. }
        | Op::EvoNormB0 { .. }
        | Op::RegionNorm { .. }
        | Op::CrmsNormalization { .. } => Family::Norm,
        Op::Reduce { .. } | Op::ArgReduce { .. } | Op::CumSum { .. } | Op::TopK { .. } => Family::Reduce,
        Op::Reshape { .. }
        | Op::Transpose { .. }
        | Op::Concat { .. }
        | Op::Split { .. }
        | Op::Slice { .. }
        | Op::Gather { .. }
        | Op::Unsqueeze { .. }
        | Op::Squeeze { .. }
        | Op::Expand { .. }
        | Op::Flatten { .. }
        | Op::Tile { .. } => Family::Movement,
        Op::GatherElements { .. } | Op::GatherND { .. } | Op::ScatterND { .. } | Op::ScatterElements { .. } => {
            Family::Index
        }
        Op::MaskedSoftmax | Op::Attention { .. } => Family::Fused,
    }
}

impl Op {
    /// Fails unless `count` inputs is within [`Op::arity`].
    pub fn check_arity(&self, count: usize) -> Result<(), String> {
        let (min, max) = self.arity();
        if (min..=max).contains(&count) {
            return Ok(());
        }
        let want = if min == max {
            min.to_string()
        } else if max == usize::MAX {
            format!("at least {min}")
        } else {
            format!("{min} to {max}")
        };
        Err(format!("{} takes {want} input(s), got {count}", self.name()))
    }

    /// Output types for the given input types, or why the inputs are invalid for this op.
    pub fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
        self.check_arity(inputs.len())?;
        match family(self) {
            Family::Elementwise => elementwise::infer(self, inputs),
            Family::Linalg => linalg::infer(self, inputs),
            Family::Conv => conv::infer(self, inputs),
            Family::Pool => pool::infer(self, inputs),
            Family::Resize => resize::infer(self, inputs),
            Family::Norm => norm::infer(self, inputs),
            Family::Reduce => reduce::infer(self, inputs),
            Family::Movement => movement::infer(self, inputs),
            Family::Index => index::infer(self, inputs),
            Family::Fused => fused::infer(self, inputs),
        }
    }

    /// Reference evaluation; inputs that `infer` would refuse are an error, never a panic.
    pub fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>, String> {
        // `eval` is public, so it must not index out of bounds on inputs nobody validated. The norm
        // and movement families re-run `infer` themselves (they need the output types); the others
        // are validated here.
        if !matches!(family(self), Family::Norm | Family::Movement) {
            let types: Vec<TensorType> = inputs.iter().map(|t| t.ty()).collect();
            self.infer(&types.iter().collect::<Vec<_>>())?;
        }
        match family(self) {
            Family::Elementwise => elementwise::eval(self, inputs),
            Family::Linalg => linalg::eval(self, inputs),
            Family::Conv => conv::eval(self, inputs),
            Family::Pool => pool::eval(self, inputs),
            Family::Resize => resize::eval(self, inputs),
            Family::Norm => norm::eval(self, inputs),
            Family::Reduce => reduce::eval(self, inputs),
            Family::Movement => movement::eval(self, inputs),
            Family::Index => index::eval(self, inputs),
            Family::Fused => fused::eval(self, inputs),
        }
    }
}

/// Normalises a possibly negative axis against a rank (ONNX: −rank ≤ axis < rank).
pub fn normalize_axis(axis: i64, rank: usize) -> Result<usize, String> {
    let r = rank as i64;
    if axis < -r || axis >= r {
        return Err(format!("axis {axis} is out of range for rank {rank}"));
    }
    Ok(if axis < 0 { (axis + r) as usize } else { axis as usize })
}

/// An error for an op family reached with an op it does not handle: a bug in the dispatcher.
pub(crate) fn not_in_family(op: &Op) -> String {
    format!("internal error: {} dispatched to the wrong op family", op.name())
}

/// Fails unless every listed input is f32.
pub(crate) fn expect_f32(op: &Op, inputs: &[&TensorType]) -> Result<(), String> {
    for (i, t) in inputs.iter().enumerate() {
        if t.dtype != crate::DType::F32 {
            return Err(format!("{} input {i} must be f32, got {}", op.name(), t.dtype));
        }
    }
    Ok(())
}

/// Helpers shared by the op families' unit tests.
#[cfg(test)]
pub(crate) mod test_support {
    use crate::{Op, Tensor, TensorType};

    pub(crate) fn t(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_f32(shape, v.to_vec()).unwrap()
    }

    pub(crate) fn run(op: &Op, inputs: &[&Tensor]) -> Tensor {
        let types: Vec<TensorType> = inputs.iter().map(|t| t.ty()).collect();
        let refs: Vec<&TensorType> = types.iter().collect();
        let inferred = op.infer(&refs).unwrap();
        let out = op.eval(inputs).unwrap().remove(0);
        assert_eq!(out.ty(), inferred[0]);
        out
    }

    pub(crate) fn infer_err(op: &Op, shapes: &[&[usize]]) -> String {
        let types: Vec<TensorType> = shapes.iter().map(|s| TensorType::f32(*s)).collect();
        let refs: Vec<&TensorType> = types.iter().collect();
        op.infer(&refs).unwrap_err()
    }
}

#[cfg(test)]
mod tests {
    use crate::{Op, Tensor};

    #[test]
    fn eval_refuses_what_infer_refuses() {
        let a = Tensor::from_f32([3, 4], vec![1.0; 12]).unwrap();
        let b = Tensor::from_f32([5, 6], vec![1.0; 30]).unwrap();
        assert_eq!(Op::MatMul.eval(&[&a, &b]).unwrap_err(), "inner dimensions differ: [3,4] · [5,6]");
        assert_eq!(Op::MatMul.eval(&[&a]).unwrap_err(), "MatMul takes 2 input(s), got 1");
        let conv = Op::Conv { strides: [1, 1], dilations: [1, 1], pads: [0; 4], group: 1 };
        assert!(conv.eval(&[&a, &b]).unwrap_err().contains("rank"));
    }
}
