//! The `.kir` text form: prints a graph and parses it back to an equal graph. (stub — to be written)
