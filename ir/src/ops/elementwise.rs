//! (stub — to be written)

use crate::dtype::TensorType;
use crate::op::Op;
use crate::tensor::Tensor;

pub(crate) fn infer(op: &Op, _inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
    Err(format!("{}: shape inference not written yet", op.name()))
}

pub(crate) fn eval(op: &Op, _inputs: &[&Tensor]) -> Result<Vec<Tensor>, String> {
    Err(format!("{}: evaluation not written yet", op.name()))
}
