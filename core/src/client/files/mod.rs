//! Files over PowerShell: [`Client::copy`] sends a local file to the server and
//! [`Client::fetch`] brings a remote file here, each through one pipeline on a runspace pool of
//! its own.
//!
//! Both stream: the file is read and written a chunk at a time on either side, every chunk is a
//! base64 [string] (PIPELINE_INPUT for a copy, PIPELINE_OUTPUT for a fetch) and the SHA-1 of the
//! whole file (forced by the recordings of pypsrp against Windows) is computed on both ends and
//! compared before the destination is put in place. The scripts the server runs are
//! `copy.ps1` and `fetch.ps1` beside this file; their headers state the contract.
//!
//! - [`local`]: local file checks, reads and the `.part` file a fetch writes to;
//! - [`remote_errors`]: the server's error records as [`FileError`]s (psremote's own
//!   `PSRemote.File.<Kind>` ids and pypsrp's scripts' texts);
//! - [`copy`] and [`fetch`]: the two transfers.

mod copy;
mod fetch;
mod local;
mod remote_errors;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::Client;
use super::powershell::{PoolConfig, RunspacePool};
use crate::error::{Error, Result};
use crate::file_error::{FileError, FileErrorKind, FileSide};

pub use remote_errors::from_record as file_error_from_record;

/// The script a copy runs on the server (contract in its header).
pub const COPY_SCRIPT: &str = include_str!("copy.ps1");
/// The script a fetch runs on the server (contract in its header).
pub const FETCH_SCRIPT: &str = include_str!("fetch.ps1");

/// Progress of a transfer: bytes done so far and the total when known. Called on a runtime
/// worker thread after each chunk; keep it short.
pub type ProgressCallback = Arc<dyn Fn(u64, Option<u64>) + Send + Sync>;

/// Bytes a copy may have sent beyond what the server acknowledged as written.
pub const DEFAULT_ACK_WINDOW: u64 = 16 * 1024 * 1024;
/// The largest chunk a caller may ask for.
pub const MAX_CHUNK_SIZE: usize = 4 * 1024 * 1024;

/// Options of [`Client::copy`].
#[derive(Clone)]
pub struct CopyOptions {
    /// Session configuration the pool opens; `Microsoft.PowerShell` by default.
    pub configuration_name: String,
    /// Expand `%VAR%`, `$env:VAR` and `${env:VAR}` in the remote path on the server.
    pub expand_variables: bool,
    /// Raw bytes per input object; by default as many as fill one fragment of the pool's
    /// negotiated envelope. 1 to [`MAX_CHUNK_SIZE`].
    pub chunk_size: Option<usize>,
    /// Bytes sent beyond the server's last acknowledgement before the copy waits for one.
    pub ack_window: u64,
    /// Deadline of the whole call (opening the pool included).
    pub timeout: Option<Duration>,
    /// Called after each chunk is sent.
    pub progress: Option<ProgressCallback>,
}

impl Default for CopyOptions {
    fn default() -> Self {
        Self {
            configuration_name: "Microsoft.PowerShell".into(),
            expand_variables: true,
            chunk_size: None,
            ack_window: DEFAULT_ACK_WINDOW,
            timeout: None,
            progress: None,
        }
    }
}

impl std::fmt::Debug for CopyOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CopyOptions")
            .field("configuration_name", &self.configuration_name)
            .field("expand_variables", &self.expand_variables)
            .field("chunk_size", &self.chunk_size)
            .field("ack_window", &self.ack_window)
            .field("timeout", &self.timeout)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// Options of [`Client::fetch`].
#[derive(Clone)]
pub struct FetchOptions {
    /// Session configuration the pool opens; `Microsoft.PowerShell` by default.
    pub configuration_name: String,
    /// Expand `%VAR%`, `$env:VAR` and `${env:VAR}` in the remote path on the server.
    pub expand_variables: bool,
    /// Deadline of the whole call (opening the pool included).
    pub timeout: Option<Duration>,
    /// Called after each chunk is written.
    pub progress: Option<ProgressCallback>,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            configuration_name: "Microsoft.PowerShell".into(),
            expand_variables: true,
            timeout: None,
            progress: None,
        }
    }
}

impl std::fmt::Debug for FetchOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetchOptions")
            .field("configuration_name", &self.configuration_name)
            .field("expand_variables", &self.expand_variables)
            .field("timeout", &self.timeout)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// What a finished copy did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyOutcome {
    /// The absolute path the server wrote, as it reported it.
    pub remote_path: String,
    /// Bytes sent.
    pub bytes: u64,
    /// SHA-1 of the file (lowercase hex), checked by the server.
    pub sha1: String,
    /// Warnings the server wrote.
    pub warnings: Vec<String>,
}

/// What a finished fetch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchOutcome {
    /// The local file written.
    pub local_path: PathBuf,
    /// Bytes received.
    pub bytes: u64,
    /// SHA-1 of the file (lowercase hex), checked here against the server's.
    pub sha1: String,
    /// Warnings the server wrote.
    pub warnings: Vec<String>,
}

impl Client {
    /// Copies the local file `src` to `dest` on the server, streamed in chunks and verified
    /// by SHA-1. An existing destination file is replaced; a destination that is a directory
    /// is refused. Returns where the server put the file.
    pub async fn copy(&self, src: &Path, dest: &str, options: &CopyOptions) -> Result<CopyOutcome> {
        if let Some(size) = options.chunk_size
            && !(1..=MAX_CHUNK_SIZE).contains(&size)
        {
            return Err(Error::InvalidConfig(format!("chunk_size {size} is not between 1 and {MAX_CHUNK_SIZE}")));
        }
        let source = local::open_source(src).await?;
        let name = format!("copy to {dest:?}");
        with_pool(self, &options.configuration_name, options.timeout, &name, |pool| {
            copy::run(pool, source, dest, options)
        })
        .await
    }

    /// Fetches the remote file `src` into the local file `dest`, streamed in chunks and
    /// verified by SHA-1. The data goes to a `.part` file beside `dest` that replaces `dest`
    /// only once the hashes match; on any failure it is removed.
    pub async fn fetch(&self, src: &str, dest: &Path, options: &FetchOptions) -> Result<FetchOutcome> {
        let part = local::PartFile::create(dest).await?;
        let name = format!("fetch of {src:?}");
        with_pool(self, &options.configuration_name, options.timeout, &name, |pool| {
            fetch::run(pool, src, part, options)
        })
        .await
    }
}

/// Opens a pool, runs `transfer` on it within the deadline, and deletes the pool whatever
/// happened (a transfer cut short by the deadline is stopped by the Delete).
async fn with_pool<'a, T, F, Fut>(
    client: &Client,
    configuration_name: &str,
    timeout: Option<Duration>,
    what: &str,
    transfer: F,
) -> Result<T>
where
    F: FnOnce(RunspacePool) -> Fut,
    Fut: std::future::Future<Output = Result<T>> + 'a,
{
    let config = PoolConfig { configuration_name: configuration_name.to_owned(), ..PoolConfig::default() };
    let work = async {
        let pool = RunspacePool::open(client, config).await?;
        let outcome = transfer(pool.clone()).await;
        if let Err(e) = pool.close().await {
            tracing::warn!(error = %e, "could not delete the runspace pool of a file transfer");
        }
        outcome
    };
    match timeout {
        None => work.await,
        // Dropping `work` drops the pool's last handle, which deletes it in the background.
        Some(limit) => match tokio::time::timeout(limit, work).await {
            Ok(r) => r,
            Err(_) => {
                Err(Error::Timeout(format!("{what} did not finish within {}", crate::client::runtime::seconds(limit))))
            }
        },
    }
}

fn file_error(kind: FileErrorKind, side: FileSide, path: impl Into<String>, message: impl Into<String>) -> Error {
    Error::File(Box::new(FileError::new(kind, side, path, message)))
}

/// Lowercase hex of a digest.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `text` is a SHA-1 as the scripts write it (40 hex digits).
fn is_sha1_hex(text: &str) -> bool {
    text.len() == 40 && text.bytes().all(|b| b.is_ascii_hexdigit())
}
