//! The server's error records as file errors.
//!
//! psremote's scripts fail with a terminating error whose FullyQualifiedErrorId is
//! `PSRemote.File.<Kind>` (PowerShell may append `,<command>` to an id). The recordings of
//! pypsrp's scripts against Windows fail with a thrown string, which PowerShell makes both
//! the message and the id; those texts are recognised too, so a server still running
//! pypsrp's scripts (or the replayed recordings) gives the same typed errors.

use super::is_sha1_hex;
use crate::error::Error;
use crate::file_error::{FileError, FileErrorKind, FileSide};
use crate::psrp::ErrorRecord;

const ID_PREFIX: &str = "PSRemote.File.";

/// The error a failed transfer pipeline stands for; `path` is the remote path as the caller
/// gave it.
pub fn from_record(record: &ErrorRecord, path: &str) -> Error {
    let id = record.fully_qualified_error_id.as_deref().unwrap_or("");
    let message = record.message.clone();
    if let Some(rest) = id.strip_prefix(ID_PREFIX) {
        let name = rest.split(',').next().unwrap_or("");
        if name == "Protocol" {
            return Error::protocol(format!("the server's file script refused the exchange: {message}"));
        }
        let kind = FileErrorKind::from_name(name).unwrap_or(FileErrorKind::Io);
        return with_record(kind, path, message, record);
    }
    // pypsrp 0.9.1's scripts (recorded against Windows).
    if message.starts_with("The path at '") && message.ends_with("' is a directory, src must be a file") {
        return with_record(FileErrorKind::IsADirectory, path, message, record);
    }
    if message.starts_with("The path at '") && message.ends_with("' does not exist") {
        return with_record(FileErrorKind::NotFound, path, message, record);
    }
    if message.starts_with("Transport failure, hash mismatch") {
        return with_record(FileErrorKind::HashMismatch, path, message, record);
    }
    with_record(FileErrorKind::Io, path, message, record)
}

fn with_record(kind: FileErrorKind, path: &str, message: String, record: &ErrorRecord) -> Error {
    let mut e = FileError::new(kind, FileSide::Remote, path, first_line(&message));
    if kind == FileErrorKind::HashMismatch {
        e.actual_sha1 = labelled_hash(&message, "Actual:");
        e.expected_sha1 = labelled_hash(&message, "Expected:");
    }
    e.record = Some(record.clone());
    Error::File(Box::new(e))
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or("").trim_end().to_owned()
}

/// The hash on the line starting with `label` (`Actual: <40 hex>`).
fn labelled_hash(message: &str, label: &str) -> Option<String> {
    message
        .lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| is_sha1_hex(h))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clixml::Value;

    fn record(id: Option<&str>, message: &str) -> ErrorRecord {
        ErrorRecord {
            message: message.into(),
            fully_qualified_error_id: id.map(str::to_owned),
            category: 14,
            activity: None,
            reason: None,
            target_name: None,
            target_type: None,
            category_message: None,
            details_message: None,
            script_stack_trace: None,
            position_message: None,
            raw: Value::Nil,
        }
    }

    fn file(e: Error) -> FileError {
        match e {
            Error::File(f) => *f,
            other => panic!("not a file error: {other:?}"),
        }
    }

    #[test]
    fn psremote_ids_with_or_without_a_command_suffix() {
        let e = file(from_record(&record(Some("PSRemote.File.ParentNotFound"), "no folder"), r"C:\x\y"));
        assert_eq!((e.kind, e.side, e.path.as_str()), (FileErrorKind::ParentNotFound, FileSide::Remote, r"C:\x\y"));
        let e = file(from_record(&record(Some("PSRemote.File.AccessDenied,copy.ps1"), "denied"), "p"));
        assert_eq!(e.kind, FileErrorKind::AccessDenied);
        let e = file(from_record(&record(Some("PSRemote.File.Bogus"), "?"), "p"));
        assert_eq!(e.kind, FileErrorKind::Io);
        assert!(matches!(from_record(&record(Some("PSRemote.File.Protocol"), "bad"), "p"), Error::Protocol(_)));
    }

    #[test]
    fn psremote_hash_mismatch_carries_both_hashes() {
        let text = "The copied data does not match the client's file: hash mismatch\r\nActual: 32D10C7B8CF96570CA04CE37F2A19D84240D3A89\r\nExpected: c3499c2729730a7f807efb8676a92dcb6f8a3f8f";
        let e = file(from_record(&record(Some("PSRemote.File.HashMismatch"), text), "p"));
        assert_eq!(e.kind, FileErrorKind::HashMismatch);
        assert_eq!(e.actual_sha1.as_deref(), Some("32d10c7b8cf96570ca04ce37f2a19d84240d3a89"));
        assert_eq!(e.expected_sha1.as_deref(), Some("c3499c2729730a7f807efb8676a92dcb6f8a3f8f"));
        assert_eq!(e.message, "The copied data does not match the client's file: hash mismatch");
    }

    #[test]
    fn pypsrp_texts() {
        let t = r"The path at 'C:\Windows' is a directory, src must be a file";
        assert_eq!(file(from_record(&record(Some(t), t), "p")).kind, FileErrorKind::IsADirectory);
        let t = r"The path at 'C:\fakefile.txt' does not exist";
        assert_eq!(file(from_record(&record(Some(t), t), "p")).kind, FileErrorKind::NotFound);
        let t = "Transport failure, hash mismatch\r\nActual: 32d10c7b8cf96570ca04ce37f2a19d84240d3a89\r\nExpected: c3499c2729730a7f807efb8676a92dcb6f8a3f8f";
        let e = file(from_record(&record(Some(t), t), "p"));
        assert_eq!(e.kind, FileErrorKind::HashMismatch);
        assert_eq!(e.expected_sha1.as_deref(), Some("c3499c2729730a7f807efb8676a92dcb6f8a3f8f"));
        assert_eq!(file(from_record(&record(None, "something else"), "p")).kind, FileErrorKind::Io);
    }
}
