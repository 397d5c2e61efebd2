//! The data of a failed file transfer ([`crate::Error::File`]): which side, which path, what
//! went wrong, and for a hash mismatch both hashes.

use std::fmt;

use crate::psrp::ErrorRecord;

/// Which end of a transfer failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileSide {
    /// This machine (the copy's source, the fetch's destination).
    Local,
    /// The server (the copy's destination, the fetch's source).
    Remote,
}

impl FileSide {
    /// `local` or `remote`.
    pub fn as_str(self) -> &'static str {
        match self {
            FileSide::Local => "local",
            FileSide::Remote => "remote",
        }
    }
}

/// What went wrong with a file; stable across releases and mapped by the bindings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileErrorKind {
    /// The source file does not exist.
    NotFound,
    /// A directory where a file is expected (source or destination).
    IsADirectory,
    /// The destination's folder does not exist.
    ParentNotFound,
    /// The operating system refused access.
    AccessDenied,
    /// No space left where the file is written.
    DiskFull,
    /// Another process holds the file (Windows sharing violation).
    InUse,
    /// The path is empty, malformed or not a file-system path.
    InvalidPath,
    /// The SHA-1 of what arrived differs from the SHA-1 of what was sent.
    HashMismatch,
    /// The transfer was stopped before it finished.
    Cancelled,
    /// Any other input/output failure.
    Io,
}

impl FileErrorKind {
    /// The name used in `PSRemote.File.<Kind>` error ids and by the bindings.
    pub fn as_str(self) -> &'static str {
        match self {
            FileErrorKind::NotFound => "NotFound",
            FileErrorKind::IsADirectory => "IsADirectory",
            FileErrorKind::ParentNotFound => "ParentNotFound",
            FileErrorKind::AccessDenied => "AccessDenied",
            FileErrorKind::DiskFull => "DiskFull",
            FileErrorKind::InUse => "InUse",
            FileErrorKind::InvalidPath => "InvalidPath",
            FileErrorKind::HashMismatch => "HashMismatch",
            FileErrorKind::Cancelled => "Cancelled",
            FileErrorKind::Io => "Io",
        }
    }

    /// The kind named `name` (as in [`FileErrorKind::as_str`]).
    pub fn from_name(name: &str) -> Option<Self> {
        const ALL: [FileErrorKind; 10] = [
            FileErrorKind::NotFound,
            FileErrorKind::IsADirectory,
            FileErrorKind::ParentNotFound,
            FileErrorKind::AccessDenied,
            FileErrorKind::DiskFull,
            FileErrorKind::InUse,
            FileErrorKind::InvalidPath,
            FileErrorKind::HashMismatch,
            FileErrorKind::Cancelled,
            FileErrorKind::Io,
        ];
        ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// A failed file transfer.
#[derive(Debug, Clone, PartialEq)]
pub struct FileError {
    /// What went wrong.
    pub kind: FileErrorKind,
    /// Where it went wrong.
    pub side: FileSide,
    /// The path concerned, as the failing side names it.
    pub path: String,
    /// What the failing side said.
    pub message: String,
    /// For [`FileErrorKind::HashMismatch`]: the SHA-1 (lowercase hex) of what was sent.
    pub expected_sha1: Option<String>,
    /// For [`FileErrorKind::HashMismatch`]: the SHA-1 (lowercase hex) of what arrived.
    pub actual_sha1: Option<String>,
    /// The server's error record, when the server reported the failure.
    pub record: Option<ErrorRecord>,
}

impl FileError {
    /// A failure with no hashes and no record.
    pub fn new(kind: FileErrorKind, side: FileSide, path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind,
            side,
            path: path.into(),
            message: message.into(),
            expected_sha1: None,
            actual_sha1: None,
            record: None,
        }
    }
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} file {:?}: {}", self.side.as_str(), self.path, self.message)?;
        if let (Some(e), Some(a)) = (&self.expected_sha1, &self.actual_sha1) {
            write!(f, " (expected sha1 {e}, got {a})")?;
        }
        Ok(())
    }
}
