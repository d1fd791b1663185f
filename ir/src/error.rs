//! Errors that name what is wrong and where.

use std::fmt;

/// One problem, with the place it was found: a JSON path, a line and column, a node or tensor name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub location: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.location.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.location, self.message)
        }
    }
}

/// Every problem found in one go (`kiln check` prints them all). Never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    diagnostics: Vec<Diagnostic>,
}

impl Error {
    pub fn new(location: impl Into<String>, message: impl Into<String>) -> Error {
        Error { diagnostics: vec![Diagnostic { location: location.into(), message: message.into() }] }
    }

    /// `None` when there is nothing to report.
    pub fn from_diagnostics(diagnostics: Vec<Diagnostic>) -> Option<Error> {
        if diagnostics.is_empty() { None } else { Some(Error { diagnostics }) }
    }

    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.diagnostics
    }

    pub fn into_diagnostics(self) -> Vec<Diagnostic> {
        self.diagnostics
    }

    /// Prefixes every location, e.g. with the file the problem was found in.
    pub fn within(mut self, outer: &str) -> Error {
        for d in &mut self.diagnostics {
            d.location = if d.location.is_empty() { outer.to_string() } else { format!("{outer}: {}", d.location) };
        }
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

pub type Result<T, E = Error> = std::result::Result<T, E>;
