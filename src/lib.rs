//! kiln: a neural-network model compiler.
