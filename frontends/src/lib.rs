//! Model file readers: the only crate that knows model file formats. Each reader turns a file into
//! a [`kiln_ir::Model`] (graph + weights) or an error naming every problem and where it is.

pub mod artifact;
pub mod files;
pub mod json;
pub mod npy;
pub mod onnx;

pub use files::ReadLimits;
pub use json::{load_json, load_json_with, parse_json, parse_json_with};
