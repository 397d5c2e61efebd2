//! [`Client::fetch`](crate::client::Client::fetch): the server writes the file as base64
//! output strings, one chunk each, then its SHA-1; the client writes each chunk to the part
//! file as it arrives and puts the file in place once the hashes match.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sha1::{Digest as _, Sha1};

use super::local::PartFile;
use super::{FETCH_SCRIPT, FetchOptions, FetchOutcome, file_error, hex, is_sha1_hex, remote_errors};
use crate::client::powershell::RunspacePool;
use crate::clixml::Value;
use crate::error::{Error, Result};
use crate::file_error::FileError;
use crate::file_error::{FileErrorKind, FileSide};
use crate::psrp::{Command, Event, PipelineSpec, PipelineState};

/// The Activity of fetch.ps1's size announcement (StatusDescription: the file's length).
pub(super) const SIZE_ACTIVITY: &str = "psremote:fetch-size";

/// The pipeline a fetch runs: fetch.ps1 with the source and the expansion flag, no input.
pub fn spec(src: &str, expand_variables: bool) -> PipelineSpec {
    let mut command = Command::script(FETCH_SCRIPT);
    command.parameters = vec![(None, Value::Str(src.to_owned())), (None, Value::Bool(expand_variables))];
    PipelineSpec { statements: vec![vec![command]], has_input: false, ..PipelineSpec::default() }
}

pub(super) async fn run(
    pool: RunspacePool,
    src: &str,
    mut part: PartFile,
    options: &FetchOptions,
) -> Result<FetchOutcome> {
    let mut pipeline = pool.start(&spec(src, options.expand_variables)).await?;
    let mut hasher = Sha1::new();
    let mut bytes = 0u64;
    let mut total = None;
    let mut warnings = Vec::new();
    // Every output but the last is data; the last is the hash. So each output is written
    // only when the next one arrives.
    let mut held: Option<String> = None;
    let (state, error) = loop {
        match pipeline.next_event().await? {
            None => return Err(Error::protocol("the fetch's pipeline ended without a final state")),
            Some(Event::Output { value, .. }) => {
                let Value::Str(text) = value else {
                    return Err(Error::protocol("the server sent a fetch output that is not a string"));
                };
                if let Some(previous) = held.replace(text) {
                    let data = B64
                        .decode(previous.trim())
                        .map_err(|_| Error::protocol("a fetched chunk is not valid base64"))?;
                    hasher.update(&data);
                    part.write(&data).await?;
                    bytes += data.len() as u64;
                    if let Some(p) = &options.progress {
                        p(bytes, total.map(|t: u64| t.max(bytes)));
                    }
                }
            }
            Some(Event::Warning { record, .. }) => warnings.push(record.message),
            Some(Event::Progress { record, .. }) if record.activity == SIZE_ACTIVITY => {
                total = record.status_description.trim().parse::<u64>().ok();
            }
            Some(Event::PipelineState { state, error, .. }) if state.is_finished() => break (state, error),
            Some(_) => {}
        }
    };
    match state {
        PipelineState::Completed => {}
        PipelineState::Failed => {
            return Err(match error {
                Some(record) => remote_errors::from_record(&record, src),
                None => {
                    file_error(FileErrorKind::Io, FileSide::Remote, src, "the fetch failed without an error record")
                }
            });
        }
        _ => return Err(file_error(FileErrorKind::Cancelled, FileSide::Remote, src, "the fetch was stopped")),
    }
    let expected = held
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| is_sha1_hex(h))
        .ok_or_else(|| Error::protocol("the fetch's last output is not the file's SHA-1"))?;
    let actual = hex(&hasher.finalize());
    if actual != expected {
        let mut e = FileError::new(
            FileErrorKind::HashMismatch,
            FileSide::Local,
            part.dest.display().to_string(),
            "the data received does not match the server's file",
        );
        e.expected_sha1 = Some(expected);
        e.actual_sha1 = Some(actual);
        return Err(Error::File(Box::new(e)));
    }
    let local_path = part.commit().await?;
    Ok(FetchOutcome { local_path, bytes, sha1: actual, warnings })
}
