//! The local-process carrier: starts a program that speaks the out-of-process transport on its
//! stdin and stdout (`pwsh -NoLogo -s`, PowerShell's server mode, by default). Its stderr is
//! kept apart (the last [`STDERR_KEPT`] bytes) for the error that reports its end. The process
//! is killed when the session ends, when it fails, and when the session is dropped (tokio's
//! `kill_on_drop`), and reaped.

use std::future::Future;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

use super::{OopStream, Peer, lock};
use crate::error::{Error, Result};

/// Bytes of the process's stderr kept for error messages (the last ones).
pub const STDERR_KEPT: usize = 4096;

/// How long the end of a session waits for the process to exit by itself (after its stdin
/// closed) before it is killed, and how long an error waits for its exit status.
const EXIT_WAIT: Duration = Duration::from_secs(3);

/// Which program to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessOptions {
    /// The program, found on `PATH` when it has no directory part; `pwsh` by default.
    pub executable: String,
    /// Its arguments; `-NoLogo -s` (server mode) by default.
    pub arguments: Vec<String>,
}

impl Default for ProcessOptions {
    fn default() -> Self {
        Self { executable: "pwsh".into(), arguments: vec!["-NoLogo".into(), "-s".into()] }
    }
}

impl ProcessOptions {
    /// Checks the options without starting anything.
    pub fn validate(&self) -> Result<()> {
        if self.executable.is_empty() {
            return Err(Error::InvalidConfig("the process transport needs an executable".into()));
        }
        if self.executable.contains('\0') || self.arguments.iter().any(|a| a.contains('\0')) {
            return Err(Error::InvalidConfig("the process's executable and arguments cannot hold NUL".into()));
        }
        Ok(())
    }
}

/// The started process.
struct ProcessPeer {
    name: String,
    pid: Option<u32>,
    child: tokio::sync::Mutex<Child>,
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl ProcessPeer {
    /// The exit status once the process exited (waiting up to `wait`), killing it if asked.
    async fn status(&self, wait: Duration, kill: bool) -> Option<std::process::ExitStatus> {
        let mut child = self.child.lock().await;
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        match tokio::time::timeout(wait, child.wait()).await {
            Ok(Ok(s)) => return Some(s),
            Ok(Err(_)) => return None,
            Err(_) => {}
        }
        if kill {
            let _ = child.start_kill();
            // Reaped here, so no zombie is left.
            return tokio::time::timeout(EXIT_WAIT, child.wait()).await.ok().and_then(|r| r.ok());
        }
        None
    }

    /// The kept stderr, escaped for a terminal, once its reader saw the end (bounded wait).
    async fn stderr_text(&self) -> Option<String> {
        let task = lock(&self.stderr_task).take();
        if let Some(task) = task {
            let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
        }
        let bytes = lock(&self.stderr).clone();
        let text = String::from_utf8_lossy(&bytes);
        let text = text.trim();
        (!text.is_empty()).then(|| crate::text::printable(text).into_owned())
    }
}

impl Peer for ProcessPeer {
    fn describe(&self) -> String {
        match self.pid {
            Some(pid) => format!("process {} (pid {pid})", self.name),
            None => format!("process {}", self.name),
        }
    }

    fn ended(&self) -> Pin<Box<dyn Future<Output = Option<String>> + Send + '_>> {
        Box::pin(async move {
            let status = self.status(EXIT_WAIT, false).await;
            let stderr = self.stderr_text().await;
            let mut parts = Vec::new();
            match status {
                Some(s) => parts.push(match (s.code(), exit_signal(&s)) {
                    (Some(code), _) => format!("it exited with status {code}"),
                    (None, Some(sig)) => format!("it was killed by signal {sig}"),
                    _ => "it exited".to_owned(),
                }),
                None => parts.push("it closed its stdout and is still running".to_owned()),
            }
            if let Some(e) = stderr {
                parts.push(format!("stderr: {e}"));
            }
            Some(parts.join("; "))
        })
    }

    fn shutdown(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            // Its stdin is closed already: a server exits by itself on EOF; else it is killed.
            let status = self.status(EXIT_WAIT, true).await;
            tracing::debug!(process = self.describe(), ?status, "out-of-process server ended");
        })
    }
}

#[cfg(unix)]
fn exit_signal(s: &std::process::ExitStatus) -> Option<i32> {
    std::os::unix::process::ExitStatusExt::signal(s)
}

#[cfg(not(unix))]
fn exit_signal(_: &std::process::ExitStatus) -> Option<i32> {
    None
}

/// Starts the process; its stdin and stdout are the session's stream.
pub async fn spawn(options: &ProcessOptions) -> Result<OopStream> {
    options.validate()?;
    let mut command = Command::new(&options.executable);
    command
        .args(&options.arguments)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|e| Error::Connect {
        address: format!("process {}", crate::text::printable(&options.executable)),
        source: e,
    })?;
    let (Some(stdin), Some(stdout), Some(mut stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        let _ = child.start_kill();
        return Err(Error::Transport { message: "the process's standard streams were not piped".into(), status: None });
    };
    let kept = Arc::new(Mutex::new(Vec::new()));
    let sink = kept.clone();
    // Keeps the last STDERR_KEPT bytes; reads until the process closes its stderr.
    let stderr_task = tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf).await {
            if n == 0 {
                break;
            }
            let mut kept = lock(&sink);
            kept.extend_from_slice(&buf[..n]);
            let over = kept.len().saturating_sub(STDERR_KEPT);
            kept.drain(..over);
        }
    });
    let name = std::path::Path::new(&options.executable)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| options.executable.clone());
    let peer = ProcessPeer {
        name: crate::text::printable(&name).into_owned(),
        pid: child.id(),
        child: tokio::sync::Mutex::new(child),
        stderr: kept,
        stderr_task: Mutex::new(Some(stderr_task)),
    };
    tracing::info!(
        target: "psremote::audit",
        event = "connect",
        transport = "process",
        endpoint = format!("process:{}", options.executable),
        process = peer.describe(),
        "out-of-process server started"
    );
    Ok(OopStream { reader: Box::new(stdout), writer: Box::new(stdin), peer: Arc::new(peer) })
}
