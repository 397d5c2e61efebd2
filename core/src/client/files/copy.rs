//! [`Client::copy`](crate::client::Client::copy): the local file goes out as PIPELINE_INPUT
//! strings, one chunk each, then its SHA-1; the server writes, checks and answers with the
//! path it wrote.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sha1::{Digest as _, Sha1};
use tokio::sync::watch;

use super::local::{Source, read_full};
use super::{COPY_SCRIPT, CopyOptions, CopyOutcome, file_error, hex, remote_errors};
use crate::client::powershell::{PipelineControl, RunspacePool};
use crate::clixml::Value;
use crate::error::{Error, Result};
use crate::file_error::{FileErrorKind, FileSide};
use crate::psrp::{self, Command, Event, PipelineSpec, PipelineState};

/// The Activity of copy.ps1's acknowledgements (StatusDescription: bytes written so far).
pub(super) const ACK_ACTIVITY: &str = "psremote:copy-ack";
/// The last input object when the client gives up: the script removes its temporary file.
const ABORT_MARKER: &str = "psremote:abort";
/// How long the copy waits for an acknowledgement before it carries on without flow control
/// (a server whose script never acknowledges).
const ACK_PATIENCE: Duration = Duration::from_secs(60);
/// How long the final state may take to arrive after a Send failed or the copy gave up.
const FINAL_STATE_GRACE: Duration = Duration::from_secs(5);
/// Bytes around the base64 text in one input fragment: the fragment header (21), the message
/// header (40) and `<S></S>` (7).
const INPUT_OVERHEAD: usize = 21 + 40 + 7;

/// The pipeline a copy runs: copy.ps1 with the destination and the expansion flag.
pub fn spec(dest: &str, expand_variables: bool) -> PipelineSpec {
    let mut command = Command::script(COPY_SCRIPT);
    command.parameters = vec![(None, Value::Str(dest.to_owned())), (None, Value::Bool(expand_variables))];
    PipelineSpec { statements: vec![vec![command]], has_input: true, ..PipelineSpec::default() }
}

/// Raw bytes per input object so that one object's base64 fills one fragment of `max_chunk`
/// bytes (a multiple of 3: no padding inside the stream).
pub fn default_chunk_size(max_chunk: usize) -> usize {
    (max_chunk.saturating_sub(INPUT_OVERHEAD) / 4 * 3).max(3)
}

pub(super) async fn run(
    pool: RunspacePool,
    mut source: Source,
    dest: &str,
    options: &CopyOptions,
) -> Result<CopyOutcome> {
    let chunk = options.chunk_size.unwrap_or_else(|| default_chunk_size(pool.max_chunk()));
    let mut pipeline = pool.start(&spec(dest, options.expand_variables)).await?;
    let control = pipeline.control();
    let (ack_tx, ack_rx) = watch::channel(0u64);

    // Set once the hash is on its way: from then on only the end of input is left, and a
    // server that finishes first (it may, having everything it needs) has the whole file.
    let hashed: std::sync::Mutex<Option<(u64, String)>> = std::sync::Mutex::new(None);
    let sender = send_file(&control, &mut source, chunk, ack_rx, options, &hashed);
    tokio::pin!(sender);
    let mut sent: Option<Result<(u64, String)>> = None;
    let mut outputs: Vec<Value> = Vec::new();
    let mut warnings = Vec::new();
    let mut final_state = None;
    while final_state.is_none() {
        tokio::select! {
            r = &mut sender, if sent.is_none() => {
                let failed = r.is_err();
                sent = Some(r);
                if failed {
                    break;
                }
            }
            ev = pipeline.next_event() => match ev? {
                None => break,
                Some(Event::Output { value, .. }) => outputs.push(value),
                Some(Event::Warning { record, .. }) => warnings.push(record.message),
                Some(Event::Progress { record, .. }) if record.activity == ACK_ACTIVITY => {
                    if let Ok(n) = record.status_description.trim().parse::<u64>() {
                        ack_tx.send_replace(n);
                    }
                }
                Some(Event::PipelineState { state, error, .. }) if state.is_finished() => final_state = Some((state, error)),
                Some(_) => {}
            },
        }
    }

    if sent.is_none() && final_state.is_some() {
        sent = tokio::time::timeout(FINAL_STATE_GRACE, &mut sender).await.ok();
    }
    let hashed = hashed.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if let (Some(Err(_)), Some((PipelineState::Completed, _)), Some(done)) = (&sent, &final_state, &hashed) {
        // Only the end of input failed, after the server had completed.
        sent = Some(Ok(done.clone()));
    }

    if let Some(Err(local)) = sent {
        // The local side failed (or a Send did): let the server remove its temporary file,
        // and prefer the server's own failure when it already had one.
        if local.file().is_some_and(|f| f.side == FileSide::Local) {
            let _ = tokio::time::timeout(FINAL_STATE_GRACE, async {
                control.send_input(vec![Value::Str(ABORT_MARKER.into())]).await?;
                control.end_input().await
            })
            .await;
        }
        let finished = match final_state {
            Some(state) => Some(state),
            None => wait_final(&mut pipeline).await.ok().flatten(),
        };
        if let Some((PipelineState::Failed, Some(record))) = finished
            && local.file().is_none()
        {
            return Err(remote_errors::from_record(&record, dest));
        }
        return Err(local);
    }

    let (state, error) =
        final_state.ok_or_else(|| Error::protocol("the copy's pipeline ended without a final state"))?;
    match state {
        PipelineState::Completed => {
            let Some((bytes, sha1)) = sent.and_then(Result::ok).or(hashed) else {
                return Err(Error::protocol("the server finished the copy before receiving the whole file"));
            };
            let remote_path = outputs
                .iter()
                .rev()
                .find_map(Value::as_str)
                .map(|s| s.trim().to_owned())
                .ok_or_else(|| Error::protocol("the server finished the copy without naming the file it wrote"))?;
            Ok(CopyOutcome { remote_path, bytes, sha1, warnings })
        }
        PipelineState::Failed => match error {
            Some(record) => Err(remote_errors::from_record(&record, dest)),
            None => {
                Err(file_error(FileErrorKind::Io, FileSide::Remote, dest, "the copy failed without an error record"))
            }
        },
        _ => Err(file_error(FileErrorKind::Cancelled, FileSide::Remote, dest, "the copy was stopped")),
    }
}

/// Waits (briefly) for the pipeline's final state.
async fn wait_final(
    pipeline: &mut crate::client::Pipeline,
) -> std::result::Result<Option<(PipelineState, Option<psrp::ErrorRecord>)>, tokio::time::error::Elapsed> {
    tokio::time::timeout(FINAL_STATE_GRACE, async {
        loop {
            match pipeline.next_event().await {
                Ok(Some(Event::PipelineState { state, error, .. })) if state.is_finished() => {
                    return Some((state, error));
                }
                Ok(Some(_)) => {}
                _ => return None,
            }
        }
    })
    .await
}

/// Sends the file chunk by chunk, then its SHA-1, then the end of input. Returns the bytes
/// sent and the hash.
async fn send_file(
    control: &PipelineControl,
    source: &mut Source,
    chunk: usize,
    mut acked: watch::Receiver<u64>,
    options: &CopyOptions,
    hashed: &std::sync::Mutex<Option<(u64, String)>>,
) -> Result<(u64, String)> {
    let hash_sent = |sent: u64, sha1: &str| {
        *hashed.lock().unwrap_or_else(|p| p.into_inner()) = Some((sent, sha1.to_owned()));
    };
    let mut hasher = Sha1::new();
    let mut buf = vec![0u8; chunk];
    let mut sent = 0u64;
    let mut flow_control = true;
    let mut first = true;
    loop {
        let n = read_full(source, &mut buf).await?;
        let last = n < chunk;
        if n == 0 && !first {
            // The file ended on a chunk boundary: only the hash is left.
            let sha1 = hex(&hasher.finalize());
            control.send_input(vec![hash_object(&sha1)]).await?;
            hash_sent(sent, &sha1);
            control.end_input().await?;
            return Ok((sent, sha1));
        }
        first = false;
        hasher.update(&buf[..n]);
        // INVARIANT: at most `ack_window` bytes are beyond the server's last acknowledgement
        // (unless it never acknowledges), so its input queue stays bounded.
        while flow_control && sent.saturating_sub(*acked.borrow()) > options.ack_window {
            match tokio::time::timeout(ACK_PATIENCE, acked.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => break,
                Err(_) => {
                    tracing::warn!("the server does not acknowledge copied data; continuing without flow control");
                    flow_control = false;
                }
            }
        }
        let data = Value::Str(B64.encode(&buf[..n]));
        sent += n as u64;
        if last {
            let sha1 = hex(&hasher.clone().finalize());
            // The last chunk and the hash travel together, as pypsrp sends them.
            control.send_input(vec![data, hash_object(&sha1)]).await?;
            hash_sent(sent, &sha1);
            report(options, sent, source.len);
            control.end_input().await?;
            return Ok((sent, sha1));
        }
        control.send_input(vec![data]).await?;
        report(options, sent, source.len);
    }
}

fn report(options: &CopyOptions, done: u64, total: u64) {
    if let Some(p) = &options.progress {
        p(done, Some(total.max(done)));
    }
}

/// The final input object: base64 of the ASCII hex SHA-1 (as pypsrp's script expects it too).
fn hash_object(sha1: &str) -> Value {
    Value::Str(B64.encode(sha1.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_chunk_fills_one_fragment() {
        let max = psrp::fragment::max_payload_for_envelope(512_000);
        let chunk = default_chunk_size(max);
        assert_eq!(chunk % 3, 0);
        assert!(chunk / 3 * 4 + INPUT_OVERHEAD <= max);
        assert!((chunk / 3 + 1) * 4 + INPUT_OVERHEAD > max);
    }
}
