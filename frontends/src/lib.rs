//! Model file readers: the only crate that knows model file formats. Each reader turns a file into
//! a [`kiln_ir::Model`] (graph + weights) or an error naming every problem and where it is.

pub mod json;

pub use json::{load_json, parse_json};
