//! Errors that name what is wrong and where, and what kind of problem it is.

use std::fmt;
use std::sync::Arc;

/// What kind of problem an [`Error`] reports, so that a caller can react without reading messages:
/// the Python package maps each kind to its own exception class, a server can answer a bad request
/// (`Input`) differently from a bad deployment (`Model`, `UnsupportedOp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The model itself is invalid: a bad graph, attribute, shape or weight. The default: most
    /// errors are found while reading and checking a model.
    #[default]
    Model,
    /// The model is valid but uses an operator (or a form of one) kiln does not implement.
    UnsupportedOp,
    /// The inputs given to a run do not match the model: a missing, repeated or unknown input, a
    /// wrong element type or shape, or an unreadable tensor file.
    Input,
    /// A file could not be opened or read (missing, not a regular file, an unknown format).
    Io,
    /// A limit was reached: the memory cap (weights or a run's memory) or an optimizer budget.
    ResourceLimit,
}

impl ErrorKind {
    /// A short lower-case name: `model`, `unsupported op`, `input`, `I/O`, `resource limit`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Model => "model",
            ErrorKind::UnsupportedOp => "unsupported op",
            ErrorKind::Input => "input",
            ErrorKind::Io => "I/O",
            ErrorKind::ResourceLimit => "resource limit",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

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

/// Every problem found in one go (`kiln check` prints them all). Never empty. Its [`ErrorKind`]
/// is [`ErrorKind::Model`] unless the place that found the problem says otherwise
/// ([`Error::with_kind`]); the messages do not depend on the kind.
#[derive(Debug, Clone)]
pub struct Error {
    kind: ErrorKind,
    diagnostics: Vec<Diagnostic>,
    /// The lower-level error this one was made from, if any (e.g. an `std::io::Error`).
    source: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
}

/// Two errors are equal when they report the same problems with the same kind; the source is
/// context, not identity.
impl PartialEq for Error {
    fn eq(&self, other: &Error) -> bool {
        self.kind == other.kind && self.diagnostics == other.diagnostics
    }
}

impl Eq for Error {}

impl Error {
    pub fn new(location: impl Into<String>, message: impl Into<String>) -> Error {
        Error {
            kind: ErrorKind::default(),
            diagnostics: vec![Diagnostic { location: location.into(), message: message.into() }],
            source: None,
        }
    }

    /// `None` when there is nothing to report.
    pub fn from_diagnostics(diagnostics: Vec<Diagnostic>) -> Option<Error> {
        if diagnostics.is_empty() {
            None
        } else {
            Some(Error { kind: ErrorKind::default(), diagnostics, source: None })
        }
    }

    /// The same error with another kind.
    pub fn with_kind(mut self, kind: ErrorKind) -> Error {
        self.kind = kind;
        self
    }

    /// The same error, made from `source` (returned by [`std::error::Error::source`]).
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Error {
        self.source = Some(Arc::new(source));
        self
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
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

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// The messages, as [`Error`]'s `Display` prints them: lets `?` turn an [`Error`] into the
/// `String` error of a test or tool helper.
impl From<Error> for String {
    fn from(error: Error) -> String {
        error.to_string()
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
