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
mod elementwise;
mod fused;
mod linalg;
mod movement;
mod norm;
mod reduce;

enum Family {
    Elementwise,
    Linalg,
    Conv,
    Norm,
    Reduce,
    Movement,
    Fused,
}

fn family(op: &Op) -> Family {
    match op {
        Op::Unary(_) | Op::Binary(_) | Op::Where | Op::Cast { .. } | Op::Identity => Family::Elementwise,
        Op::MatMul | Op::Gemm { .. } => Family::Linalg,
        Op::Conv { .. } | Op::Pad { .. } | Op::Resize { .. } => Family::Conv,
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
        | Op::RegionNorm { .. } => Family::Norm,
        Op::Reduce { .. } => Family::Reduce,
        Op::Reshape { .. }
        | Op::Transpose { .. }
        | Op::Concat { .. }
        | Op::Split { .. }
        | Op::Slice { .. }
        | Op::Gather { .. }
        | Op::Unsqueeze { .. }
        | Op::Squeeze { .. }
        | Op::Expand { .. }
        | Op::Flatten { .. } => Family::Movement,
        Op::MaskedSoftmax | Op::Attention { .. } => Family::Fused,
    }
}

impl Op {
    /// Output types for the given input types, or why the inputs are invalid for this op.
    /// The caller has checked the number of inputs against [`Op::arity`].
    pub fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
        match family(self) {
            Family::Elementwise => elementwise::infer(self, inputs),
            Family::Linalg => linalg::infer(self, inputs),
            Family::Conv => conv::infer(self, inputs),
            Family::Norm => norm::infer(self, inputs),
            Family::Reduce => reduce::infer(self, inputs),
            Family::Movement => movement::infer(self, inputs),
            Family::Fused => fused::infer(self, inputs),
        }
    }

    /// Reference evaluation. Inputs must have the types `infer` accepted.
    pub fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>, String> {
        match family(self) {
            Family::Elementwise => elementwise::eval(self, inputs),
            Family::Linalg => linalg::eval(self, inputs),
            Family::Conv => conv::eval(self, inputs),
            Family::Norm => norm::eval(self, inputs),
            Family::Reduce => reduce::eval(self, inputs),
            Family::Movement => movement::eval(self, inputs),
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
