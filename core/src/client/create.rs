//! Creating a shell so that a caller who stops waiting (a deadline, a dropped future) leaves no
//! shell behind: the Create runs as a task of its own, and when nobody takes its reply any more
//! the task deletes the shell the server created.

use tokio::sync::oneshot;

use super::runtime::spawn_detached;
use super::{Call, Client};
use crate::error::{Error, Result};
use crate::wsman::{OptionEntry, Reply, action, code, winrs};

/// A Create request for a shell of `resource_uri`, owned so that it can outlive its caller.
#[derive(Debug, Clone)]
pub(crate) struct Create {
    pub resource_uri: String,
    pub options: Vec<OptionEntry>,
    pub body: String,
    pub max_envelope_size: Option<u32>,
}

impl Create {
    /// Sends the Create and returns its reply. Dropping the returned future does not abandon
    /// the request: it completes in the background and the shell it created is deleted.
    pub(crate) async fn send(self, client: &Client) -> Result<Reply> {
        let (tx, rx) = oneshot::channel();
        let client = client.clone();
        spawn_detached(async move {
            let call = Call {
                action: action::CREATE,
                resource_uri: &self.resource_uri,
                shell_id: None,
                options: &self.options,
                body: &self.body,
                operation_timeout: None,
                max_envelope_size: self.max_envelope_size,
            };
            let reply = client.request(&call).await;
            if let Err(Ok(reply)) = tx.send(reply) {
                // The caller is gone: nobody will delete what the server just created.
                let Ok(shell_id) = winrs::shell_id_from_create(&reply) else { return };
                if !winrs::is_wsman_id(&shell_id) {
                    return;
                }
                let delete = Call { action: action::DELETE, shell_id: Some(&shell_id), body: "", options: &[], ..call };
                match client.request(&delete).await {
                    Ok(_) => tracing::debug!(shell_id, "deleted a shell whose creator stopped waiting"),
                    Err(Error::Fault(f)) if f.code == Some(code::INVALID_SELECTORS) => {}
                    Err(e) => {
                        tracing::warn!(shell_id, error = %e, "could not delete a shell whose creator stopped waiting")
                    }
                }
            }
        });
        rx.await.map_err(|_| Error::Closed("client"))?
    }
}
