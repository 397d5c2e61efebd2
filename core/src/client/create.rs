//! Creating a shell so that a caller who stops waiting (a deadline, a dropped future) leaves no
//! shell behind: the Create runs as a task of its own, and when nobody takes its reply any more
//! the task deletes the shell the server created.

use tokio::sync::oneshot;

use super::runtime::spawn_detached;
use super::{Body, Call, Client};
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
            let reply = client.request(&self.call(action::CREATE, None)).await;
            let on_orphan: Box<dyn FnOnce(Reply) + Send> =
                Box::new(move |reply| spawn_detached(self.delete_orphan(client, reply)));
            // A caller that is gone already gets it back here and drops it; one that goes before
            // opening it drops it with the channel: either way the parcel deletes the shell.
            let _ = tx.send(Parcel { reply: Some(reply), on_orphan: Some(on_orphan) });
        });
        rx.await.map_err(|_| Error::Closed("client"))?.open()
    }

    fn call<'a>(&'a self, action: &'a str, shell_id: Option<&'a str>) -> Call<'a> {
        let create = action == action::CREATE;
        Call {
            action,
            resource_uri: &self.resource_uri,
            shell_id,
            options: if create { &self.options } else { &[] },
            body: Body::Xml(if create { &self.body } else { "" }),
            operation_timeout: None,
            max_envelope_size: self.max_envelope_size,
        }
    }

    /// Deletes the shell a Create made for a caller that stopped waiting.
    async fn delete_orphan(self, client: Client, reply: Reply) {
        // Nobody else will delete what the server just created.
        let Ok(shell_id) = winrs::shell_id_from_create(&reply) else { return };
        if !winrs::is_wsman_id(&shell_id) {
            return;
        }
        match client.request(&self.call(action::DELETE, Some(&shell_id))).await {
            Ok(_) => tracing::debug!(shell_id, "deleted a shell whose creator stopped waiting"),
            Err(Error::Fault(f)) if f.code == Some(code::INVALID_SELECTORS) => {}
            Err(e) => tracing::warn!(shell_id, error = %e, "could not delete a shell whose creator stopped waiting"),
        }
    }
}

/// A Create's reply on its way to its caller. Dropped unopened, it hands a successful reply to
/// `on_orphan` (which deletes the shell): the caller stopped waiting before the reply was sent
/// (the send fails and returns the parcel) or after it (the parcel goes down with the channel,
/// which a plain reply would do without a trace, leaving the shell on the server).
struct Parcel {
    reply: Option<Result<Reply>>,
    on_orphan: Option<Box<dyn FnOnce(Reply) + Send>>,
}

impl Parcel {
    fn open(mut self) -> Result<Reply> {
        self.on_orphan = None;
        self.reply.take().unwrap_or(Err(Error::Closed("client")))
    }
}

impl Drop for Parcel {
    fn drop(&mut self) {
        if let (Some(Ok(reply)), Some(on_orphan)) = (self.reply.take(), self.on_orphan.take()) {
            on_orphan(reply);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn parcel(orphaned: &Arc<AtomicUsize>) -> Parcel {
        let reply = Reply { action: String::new(), body: crate::wsman::xml::parse(b"<Body/>").unwrap() };
        let orphaned = orphaned.clone();
        Parcel {
            reply: Some(Ok(reply)),
            on_orphan: Some(Box::new(move |_| {
                orphaned.fetch_add(1, Ordering::SeqCst);
            })),
        }
    }

    #[test]
    fn a_reply_nobody_opens_is_handed_to_the_cleanup() {
        let orphaned = Arc::new(AtomicUsize::new(0));
        // Opened: the caller has the reply and the shell is its to close.
        assert!(parcel(&orphaned).open().is_ok());
        assert_eq!(orphaned.load(Ordering::SeqCst), 0);
        // The caller was gone before the send: the send hands the parcel back.
        let (tx, rx) = oneshot::channel();
        drop(rx);
        drop(tx.send(parcel(&orphaned)));
        assert_eq!(orphaned.load(Ordering::SeqCst), 1);
        // The caller went after the send succeeded, without receiving: the channel drops it.
        let (tx, rx) = oneshot::channel();
        assert!(tx.send(parcel(&orphaned)).is_ok());
        drop(rx);
        assert_eq!(orphaned.load(Ordering::SeqCst), 2);
        // A failed Create created nothing.
        let mut failed = parcel(&orphaned);
        failed.reply = Some(Err(Error::Closed("client")));
        drop(failed);
        assert_eq!(orphaned.load(Ordering::SeqCst), 2);
    }
}
