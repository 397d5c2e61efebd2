//! The subsystem's channel as a byte stream: [`SshStream`] reads the channel's data and writes
//! to it; a task of its own (the pump) takes every message of the channel, passes data on through
//! a bounded queue (a slow reader slows the channel, not memory), keeps what the server wrote to
//! stderr and its exit status for [`SshChannelStatus`], and closes the channel and the session
//! when the stream is dropped or the server closed the channel.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use russh::client::{Handle, Msg};
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, oneshot, watch};

/// Data messages queued ahead of the reader (each at most one SSH packet, 32 KiB).
const QUEUE: usize = 8;
/// How much of the server's stderr is kept for messages.
const STDERR_KEPT: usize = 8 * 1024;
/// How long closing the channel and the session may take before the connection is just dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

type Writer = Pin<Box<dyn AsyncWrite + Send + Sync>>;

/// The byte stream of an SSH subsystem (`tokio` [`AsyncRead`] + [`AsyncWrite`]). Reading ends
/// (0 bytes) when the server ends its output or closes the channel; `shutdown` sends EOF.
/// Dropping it closes the channel and the SSH session.
pub struct SshStream {
    incoming: mpsc::Receiver<Bytes>,
    pending: Bytes,
    writer: Writer,
    status: SshChannelStatus,
    /// Dropped with the stream: tells the pump to close.
    _dropped: oneshot::Sender<()>,
}

impl fmt::Debug for SshStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshStream").field("buffered", &self.pending.len()).field("status", &self.status).finish()
    }
}

impl SshStream {
    /// Starts the pump for an open channel of `session` and returns the stream over it. `early`
    /// is data that came before the subsystem request was answered.
    pub(super) fn start<H: russh::client::Handler + 'static>(
        read: ChannelReadHalf,
        write: ChannelWriteHalf<Msg>,
        session: Handle<H>,
        early: Vec<Bytes>,
    ) -> Self {
        let (tx, incoming) = mpsc::channel(QUEUE + early.len());
        for chunk in early {
            // INVARIANT: the queue has room for every early chunk, and the receiver is alive.
            let _ = tx.try_send(chunk);
        }
        let (dropped, dropped_rx) = oneshot::channel();
        let status = SshChannelStatus::new();
        let writer: Writer = Box::pin(write.make_writer());
        tokio::spawn(pump(read, write, session, tx, dropped_rx, status.clone()));
        Self { incoming, pending: Bytes::new(), writer, status, _dropped: dropped }
    }

    /// What the server said about the channel so far (stderr, exit status); stays usable after
    /// the stream is split or dropped.
    pub fn status(&self) -> SshChannelStatus {
        self.status.clone()
    }
}

impl AsyncRead for SshStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.pending.is_empty() {
            match ready!(this.incoming.poll_recv(cx)) {
                Some(chunk) => this.pending = chunk,
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = buf.remaining().min(this.pending.len());
        buf.put_slice(&this.pending.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for SshStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        // The session outlives a channel the server closed (the writer keeps it), so a write
        // would vanish without an error: refuse it here.
        if this.status.is_closed() {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "the SSH channel is closed")));
        }
        this.writer.as_mut().poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().writer.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.status.is_closed() {
            return Poll::Ready(Ok(()));
        }
        this.writer.as_mut().poll_shutdown(cx)
    }
}

#[derive(Debug, Default)]
struct StatusInner {
    stderr: Vec<u8>,
    stderr_dropped: usize,
    exit_status: Option<u32>,
    exit_signal: Option<String>,
    eof: bool,
}

/// What the server reported on a subsystem's channel: its stderr (the first 8 KiB), its exit
/// status or signal, and whether the channel is closed. Cheap to clone; shared with the pump.
#[derive(Clone)]
pub struct SshChannelStatus {
    inner: Arc<Mutex<StatusInner>>,
    closed: watch::Sender<bool>,
    close_requested: watch::Sender<bool>,
}

impl fmt::Debug for SshChannelStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("SshChannelStatus")
            .field("stderr_bytes", &(inner.stderr.len() + inner.stderr_dropped))
            .field("exit_status", &inner.exit_status)
            .field("exit_signal", &inner.exit_signal)
            .field("closed", &*self.closed.borrow())
            .finish()
    }
}

impl SshChannelStatus {
    fn new() -> Self {
        Self { inner: Arc::default(), closed: watch::Sender::new(false), close_requested: watch::Sender::new(false) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StatusInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What the subsystem wrote to stderr so far (at most the first 8 KiB; server text, not
    /// escaped). OpenSSH's sshd passes a command's stderr on but not a subsystem's.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.lock().stderr).into_owned()
    }

    /// The subsystem's exit status, once the server sent it.
    pub fn exit_status(&self) -> Option<u32> {
        self.lock().exit_status
    }

    /// The signal that ended the subsystem, once the server sent it.
    pub fn exit_signal(&self) -> Option<String> {
        self.lock().exit_signal.clone()
    }

    /// Whether the channel is closed (by either side, or with the connection).
    pub fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Closes the channel and the session now, as dropping the stream does, for whoever holds
    /// only this status (the stream may be split and owned elsewhere); reads then end and writes
    /// fail. Returns at once: [`closed`](Self::closed) waits for it.
    pub fn close(&self) {
        self.close_requested.send_replace(true);
    }

    /// Waits until the channel is closed; the exit status, when the server sends one, comes
    /// before.
    pub async fn closed(&self) {
        let mut rx = self.closed.subscribe();
        // An error means the pump is gone, which closes the channel too.
        let _ = rx.wait_for(|c| *c).await;
    }

    /// One sentence for an error message: the exit status or signal and the stderr, escaped
    /// for a terminal; empty when the server said nothing.
    pub fn describe(&self) -> String {
        let inner = self.lock();
        let mut parts = Vec::new();
        if let Some(code) = inner.exit_status {
            parts.push(format!("the subsystem exited with status {code}"));
        }
        if let Some(signal) = &inner.exit_signal {
            parts.push(format!("the subsystem was ended by signal {}", crate::text::printable(signal)));
        }
        let stderr = String::from_utf8_lossy(&inner.stderr);
        let stderr = stderr.trim();
        if !stderr.is_empty() {
            let more = if inner.stderr_dropped > 0 {
                format!(" (and {} more bytes)", inner.stderr_dropped)
            } else {
                String::new()
            };
            parts.push(format!("its stderr: {}{more}", crate::text::printable(stderr)));
        }
        parts.join("; ")
    }

    fn add_stderr(&self, data: &[u8]) {
        let mut inner = self.lock();
        let room = STDERR_KEPT.saturating_sub(inner.stderr.len());
        let kept = room.min(data.len());
        inner.stderr.extend_from_slice(&data[..kept]);
        inner.stderr_dropped += data.len() - kept;
    }
}

/// Moves the channel's messages to the stream until either side ends, then closes the channel
/// and the session.
async fn pump<H: russh::client::Handler>(
    mut read: ChannelReadHalf,
    write: ChannelWriteHalf<Msg>,
    session: Handle<H>,
    tx: mpsc::Sender<Bytes>,
    mut dropped: oneshot::Receiver<()>,
    status: SshChannelStatus,
) {
    let mut tx = Some(tx);
    let mut close_requested = status.close_requested.subscribe();
    let by_server = loop {
        let msg = tokio::select! {
            msg = read.wait() => msg,
            _ = &mut dropped => break false,
            _ = close_requested.wait_for(|c| *c) => break false,
        };
        match msg {
            Some(ChannelMsg::Data { data }) => {
                let Some(sender) = &tx else { continue };
                tokio::select! {
                    sent = sender.send(data) => if sent.is_err() { break false },
                    _ = &mut dropped => break false,
                    _ = close_requested.wait_for(|c| *c) => break false,
                }
            }
            Some(ChannelMsg::ExtendedData { data, .. }) => status.add_stderr(&data),
            Some(ChannelMsg::ExitStatus { exit_status }) => status.lock().exit_status = Some(exit_status),
            Some(ChannelMsg::ExitSignal { signal_name, error_message, .. }) => {
                let name = format!("{signal_name:?}");
                let text = if error_message.is_empty() { name } else { format!("{name} ({error_message})") };
                status.lock().exit_signal = Some(text);
            }
            Some(ChannelMsg::Eof) => {
                status.lock().eof = true;
                // The reader sees the end of the data now; the exit status may still follow.
                tx = None;
            }
            Some(ChannelMsg::Close) | None => break true,
            Some(_) => {}
        }
    };
    drop(tx);
    status.closed.send_replace(true);
    tracing::debug!(by_server, status = ?status, "ssh subsystem channel closed");
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        if !by_server {
            let _ = write.close().await;
        }
        let _ = session.disconnect(russh::Disconnect::ByApplication, "", "en").await;
    })
    .await;
    // Dropping the handle and the channel's halves ends the session's task and its connection.
}
