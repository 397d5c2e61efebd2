//! The worker that answers the server's host calls, one at a time and in order.

use std::sync::{Arc, Weak};

use tokio::sync::{mpsc, oneshot};

use super::lock;
use super::session::Shared;
use crate::psrp::{HostCall, HostResponse};

/// One host call for the worker; `done` fires once the host has handled it (and, for methods
/// that return a value, the answer has been sent).
pub(super) struct HostJob {
    pub pid: Option<uuid::Uuid>,
    pub call: HostCall,
    pub done: Option<oneshot::Sender<()>>,
}

/// Answers host calls one at a time, in order. Holds the pool weakly so that dropping the pool
/// ends the worker (the channel closes with it).
pub(super) async fn host_worker(shared: Weak<Shared>, mut calls: mpsc::Receiver<HostJob>) {
    while let Some(job) = calls.recv().await {
        let Some(this) = shared.upgrade() else { return };
        answer_host_call(&this, job.pid, job.call).await;
        if let Some(done) = job.done {
            let _ = done.send(());
        }
    }
}

async fn answer_host_call(shared: &Arc<Shared>, pid: Option<uuid::Uuid>, call: HostCall) {
    let response = match shared.host.clone() {
        Some(h) => {
            let c = call.clone();
            tokio::task::spawn_blocking(move || h.call(&c))
                .await
                .unwrap_or_else(|_| HostResponse::Error("the host callback panicked".into()))
        }
        None => HostResponse::NotImplemented,
    };
    if call.method.is_void() {
        return;
    }
    if response.needs_session_key()
        && let Err(e) = shared.ensure_key().await
    {
        tracing::warn!(error = %e, "no session key for a host response carrying a secret");
    }
    let queued = lock(&shared.sm).host_response(pid, &call, &response);
    if let Err(e) = async {
        queued?;
        shared.flush().await
    }
    .await
    {
        tracing::warn!(error = %e, method = call.method.name(), "could not answer a host call");
    }
}
