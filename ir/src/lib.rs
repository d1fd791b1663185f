//! kiln's intermediate representation: a typed tensor graph with static shapes.
//!
//! - [`Op`]: the operator set (ONNX semantics, plus a documented `kiln` domain), attributes mapped in
//!   one place ([`Op::from_parts`]); shape inference and reference evaluation per op in [`ops`].
//! - [`Graph`]: a petgraph DAG of inputs, weights and ops, built and validated by [`GraphBuilder`].
//! - [`text`]: the `.kir` text form, which prints and parses back.
//! - [`eval`]: the reference interpreter, the oracle for everything downstream.
//!
//! This crate depends on no other kiln crate and knows no file format but its own text form.

pub mod attr;
pub mod builder;
pub mod dtype;
pub mod error;
pub mod eval;
pub mod graph;
pub mod init;
pub mod op;
pub mod ops;
mod suggest;
pub mod tensor;
pub mod text;
pub mod weights;

pub use attr::{Attr, Attrs};
pub use builder::GraphBuilder;
pub use dtype::{DEFAULT_MEMORY_CAP, DType, MAX_ELEMENTS, TensorType};
pub use error::{Diagnostic, Error, ErrorKind};
pub use graph::{Edge, Graph, Node, NodeId, NodeKind, Value, ValueInfo};
pub use op::{
    BinaryOp, CoordTransform, InterpMode, NearestMode, OP_NAMES, Op, PadMode, PoolWindow, ReduceKind, ScatterReduction,
    UnaryOp,
};
pub use suggest::nearest as suggest_nearest;
pub use tensor::{Tensor, TensorData};
pub use weights::{Model, Weights};
