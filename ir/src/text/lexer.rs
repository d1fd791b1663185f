//! Splits one line of `.kir` text into tokens, each with its 1-based column (in characters).
//!
//! Every item of the text form is one line, so the lexer works a line at a time: a string cannot
//! span lines, and `#` starts a comment that runs to the end of the line.

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    /// A bare name: `[A-Za-z_][A-Za-z0-9_./-]*`. Keywords, op names, element types and `nan`/`inf`
    /// are bare names too; the parser gives them meaning by position.
    Name(String),
    /// A quoted string with its escapes resolved.
    Str(String),
    /// A number as written, e.g. `-3`, `1.5`, `1e-5`; the parser decides what it must be.
    Num(String),
    /// One of `= ( ) { } [ ] , : < >`.
    Punct(char),
    Arrow,
}

impl fmt::Display for Tok {
    /// How an error message names the token it did not expect.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Name(s) => write!(f, "'{s}'"),
            Tok::Str(s) => write!(f, "string {}", super::quote(s)),
            Tok::Num(s) => write!(f, "number {s}"),
            Tok::Punct(c) => write!(f, "'{c}'"),
            Tok::Arrow => f.write_str("'->'"),
        }
    }
}

/// A token and the column where it starts.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Token {
    pub(super) col: usize,
    /// The column just after the token.
    pub(super) end: usize,
    pub(super) tok: Tok,
}

/// A lexical error: the column and the message.
pub(super) type LexError = (usize, String);

pub(super) fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

pub(super) fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-')
}

/// The tokens of one line, comment removed.
pub(super) fn tokenize(line: &str) -> Result<Vec<Token>, LexError> {
    let chars: Vec<char> = line.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        let col = i + 1;
        if c == '#' {
            break;
        }
        if c.is_whitespace() || c == '\u{feff}' {
            i += 1;
            continue;
        }
        let tok = if is_name_start(c) {
            let start = i;
            while chars.get(i).is_some_and(|&c| is_name_char(c)) {
                i += 1;
            }
            Tok::Name(chars[start..i].iter().collect())
        } else if c == '"' {
            let (s, next) = string(&chars, i)?;
            i = next;
            Tok::Str(s)
        } else if c.is_ascii_digit() || (c == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) {
            let (s, next) = number(&chars, i)?;
            i = next;
            Tok::Num(s)
        } else if c == '-' && chars.get(i + 1) == Some(&'>') {
            i += 2;
            Tok::Arrow
        } else if c == '-' && chars.get(i + 1).is_some_and(|&c| is_name_start(c)) {
            // `-inf`: a negative float spelt as a name.
            let start = i;
            i += 1;
            while chars.get(i).is_some_and(|&c| is_name_char(c)) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            if word != "-inf" {
                return Err((col, format!("unexpected '{word}'")));
            }
            Tok::Num(word)
        } else if matches!(c, '=' | '(' | ')' | '{' | '}' | '[' | ']' | ',' | ':' | '<' | '>') {
            i += 1;
            Tok::Punct(c)
        } else {
            return Err((col, format!("unexpected character {}", quote_char(c))));
        };
        tokens.push(Token { col, end: i + 1, tok });
    }
    Ok(tokens)
}

fn quote_char(c: char) -> String {
    if c.is_control() || c.is_whitespace() { format!("U+{:04X}", c as u32) } else { format!("'{c}'") }
}

/// `-?digits(.digits)?([eE][+-]?digits)?`, not followed by a name character.
fn number(chars: &[char], start: usize) -> Result<(String, usize), LexError> {
    let digits = |mut i: usize| -> usize {
        while chars.get(i).is_some_and(char::is_ascii_digit) {
            i += 1;
        }
        i
    };
    let mut i = start;
    if chars.get(i) == Some(&'-') {
        i += 1;
    }
    i = digits(i);
    if chars.get(i) == Some(&'.') && chars.get(i + 1).is_some_and(char::is_ascii_digit) {
        i = digits(i + 1);
    }
    if matches!(chars.get(i), Some('e' | 'E')) {
        let mut j = i + 1;
        if matches!(chars.get(j), Some('+' | '-')) {
            j += 1;
        }
        if chars.get(j).is_some_and(char::is_ascii_digit) {
            i = digits(j);
        }
    }
    if chars.get(i).is_some_and(|&c| is_name_char(c)) && !matches!(chars.get(i..i + 2), Some(['-', '>'])) {
        let mut end = i;
        while chars.get(end).is_some_and(|&c| is_name_char(c)) {
            end += 1;
        }
        let word: String = chars[start..end].iter().collect();
        return Err((start + 1, format!("malformed number '{word}' (names that start with a digit must be quoted)")));
    }
    Ok((chars[start..i].iter().collect(), i))
}

/// A quoted string starting at `start` (the opening quote); returns it unescaped and the index
/// after the closing quote.
fn string(chars: &[char], start: usize) -> Result<(String, usize), LexError> {
    let mut out = String::new();
    let mut i = start + 1;
    loop {
        match chars.get(i) {
            None => return Err((start + 1, "unterminated string".into())),
            Some('"') => return Ok((out, i + 1)),
            Some('\\') => {
                let col = i + 1;
                let escaped = match chars.get(i + 1) {
                    Some('\\') => '\\',
                    Some('"') => '"',
                    Some('n') => '\n',
                    Some('t') => '\t',
                    Some('r') => '\r',
                    Some('0') => '\0',
                    Some('u') => {
                        let (c, next) = unicode_escape(chars, i)?;
                        out.push(c);
                        i = next;
                        continue;
                    }
                    None => return Err((start + 1, "unterminated string".into())),
                    Some(&other) => return Err((col, format!("unknown escape '\\{other}' in a string"))),
                };
                out.push(escaped);
                i += 2;
            }
            Some(&c) => {
                out.push(c);
                i += 1;
            }
        }
    }
}

/// `\u{XXXX}` starting at the backslash at `start`.
fn unicode_escape(chars: &[char], start: usize) -> Result<(char, usize), LexError> {
    let col = start + 1;
    let bad = || (col, "malformed escape: expected \\u{X} with 1 to 6 hex digits".to_string());
    if chars.get(start + 2) != Some(&'{') {
        return Err(bad());
    }
    let mut i = start + 3;
    let mut hex = String::new();
    while let Some(&c) = chars.get(i) {
        if c == '}' {
            break;
        }
        if !c.is_ascii_hexdigit() || hex.len() == 6 {
            return Err(bad());
        }
        hex.push(c);
        i += 1;
    }
    if chars.get(i) != Some(&'}') || hex.is_empty() {
        return Err(bad());
    }
    let code = u32::from_str_radix(&hex, 16).map_err(|_| bad())?;
    let c = char::from_u32(code).ok_or_else(|| (col, format!("escape \\u{{{hex}}} is not a Unicode scalar value")))?;
    Ok((c, i + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(line: &str) -> Vec<Tok> {
        tokenize(line).unwrap().into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn text_lexer_splits_a_node_line() {
        use Tok::*;
        assert_eq!(
            toks("node fc = Gemm(x, fc.weight) {alpha=-1.5e-3} -> h: f32[2,3] # comment"),
            vec![
                Name("node".into()),
                Name("fc".into()),
                Punct('='),
                Name("Gemm".into()),
                Punct('('),
                Name("x".into()),
                Punct(','),
                Name("fc.weight".into()),
                Punct(')'),
                Punct('{'),
                Name("alpha".into()),
                Punct('='),
                Num("-1.5e-3".into()),
                Punct('}'),
                Arrow,
                Name("h".into()),
                Punct(':'),
                Name("f32".into()),
                Punct('['),
                Num("2".into()),
                Punct(','),
                Num("3".into()),
                Punct(']'),
            ]
        );
        assert_eq!(toks(r#""a \"b\"\n\u{e9}""#), vec![Str("a \"b\"\né".into())]);
        assert_eq!(
            toks("[-inf, 1e5, -7]"),
            vec![
                Punct('['),
                Num("-inf".into()),
                Punct(','),
                Num("1e5".into()),
                Punct(','),
                Num("-7".into()),
                Punct(']')
            ]
        );
        assert_eq!(
            toks("f(x)->y"),
            vec![Name("f".into()), Punct('('), Name("x".into()), Punct(')'), Arrow, Name("y".into())]
        );
    }

    #[test]
    fn text_lexer_errors_have_columns() {
        assert_eq!(tokenize(r#"input "abc"#), Err((7, "unterminated string".into())));
        assert_eq!(tokenize("a @"), Err((3, "unexpected character '@'".into())));
        assert_eq!(
            tokenize("node 1x"),
            Err((6, "malformed number '1x' (names that start with a digit must be quoted)".into()))
        );
        assert_eq!(tokenize(r#""\q""#), Err((2, "unknown escape '\\q' in a string".into())));
        assert_eq!(tokenize(r#""\u{d800}""#), Err((2, "escape \\u{d800} is not a Unicode scalar value".into())));
        assert!(tokenize(r#""\u{1234567}""#).is_err());
        assert!(tokenize(r#""\u{12"#).is_err());
        assert_eq!(tokenize("- x"), Err((1, "unexpected character '-'".into())));
    }
}
