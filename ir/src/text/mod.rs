//! The `.kir` text form of a graph, modelled on Cranelift's `.clif`: [`print`](fn@print) writes one item a
//! line, [`parse`] reads it back through [`crate::GraphBuilder`] (so validation, type inference and
//! cycle detection are the builder's), and `parse(&print(g))?.graph == g`.
//!
//! ```text
//! kir 1
//! graph tiny_mlp
//! input x: f32[2,4]
//! weight fc.weight: f32[3,4]
//! weight fc.bias: f32[3] = [0.1, -0.2, 0.3]
//! node fc = Gemm(x, fc.weight, fc.bias) {transB=1} -> h: f32[2,3]
//! node act = Relu(h) -> y: f32[2,3]
//! output y
//! ```
//!
//! The syntax is described in docs/ir-text.md. **Invariant:** the printer's output parses back to
//! an equal graph, and printing that graph gives the same text.

mod lexer;
mod parse;
mod print;

pub use parse::parse;
pub use print::{print, print_model};

/// The format version that the header line `kir 1` names.
pub const VERSION: u32 = 1;

/// A tensor, node or graph name as the text form writes it: bare when it is a plain name
/// (`[A-Za-z_][A-Za-z0-9_./-]*`), quoted otherwise, so that any name round-trips.
fn name(s: &str) -> String {
    let mut chars = s.chars();
    let plain = chars.next().is_some_and(lexer::is_name_start) && chars.all(lexer::is_name_char);
    if plain { s.to_string() } else { quote(s) }
}

/// A double-quoted string: `"` and `\` escaped, control characters as `\n`, `\t`, `\r` or `\u{X}`,
/// everything else as is (readable unicode).
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            // Control characters and the byte-order mark would be invisible or confusing in a file.
            c if c.is_control() || c == '\u{feff}' => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests;
