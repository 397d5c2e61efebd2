//! One Send in flight behind its caller: input keeps the link busy.
//!
//! A caller that streams input (a copy, pipeline input, cmd stdin) alternates between building
//! the next piece (reading, hashing, base64, CLIXML, fragments) and sending it. Sending it and
//! waiting for the answer before building the next leaves the link idle while the client works
//! and the client idle while the request travels. [`WriteBehind`] starts the request in a task
//! and returns: the caller builds the next piece while it is in flight. Before the next request
//! starts, the previous one must have been answered, so requests of one stream still go one at
//! a time and in order (a server reassembles fragments in the order it receives them), at most
//! one piece is held beyond what is on the wire, and a failed request is reported to the
//! caller's next write, or to the call that ends the stream ([`WriteBehind::settle`]).

use std::future::Future;
use std::pin::Pin;

use tokio::task::JoinHandle;

use crate::error::{Error, Result};

/// The request in flight for one input stream (one pipeline, one cmd command).
#[derive(Debug, Default)]
pub struct WriteBehind {
    in_flight: tokio::sync::Mutex<Option<JoinHandle<Result<()>>>>,
}

impl WriteBehind {
    /// Waits for the request in flight (returning its error, if it failed), then starts
    /// `request` and returns without waiting for it. The request comes boxed: a request future
    /// held inline in this one (and so in every caller's) would double their size on the stack.
    pub async fn start(&self, request: Pin<Box<dyn Future<Output = Result<()>> + Send>>) -> Result<()> {
        let mut slot = self.in_flight.lock().await;
        wait(&mut slot).await?;
        *slot = Some(tokio::spawn(request));
        Ok(())
    }

    /// Waits until the request in flight is answered; its error, if it failed.
    pub async fn settle(&self) -> Result<()> {
        wait(&mut *self.in_flight.lock().await).await
    }
}

/// Awaits the handle in place, so that a caller that stops waiting leaves it for the next one
/// (which then still goes after it), and clears it once answered.
async fn wait(slot: &mut Option<JoinHandle<Result<()>>>) -> Result<()> {
    let Some(handle) = slot.as_mut() else { return Ok(()) };
    let joined = handle.await;
    *slot = None;
    match joined {
        Ok(r) => r,
        Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
        Err(_) => Err(Error::Closed("input stream")),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn requests_go_one_at_a_time_in_order() {
        let behind = WriteBehind::default();
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let running = Arc::new(AtomicUsize::new(0));
        for i in 0..5u64 {
            let (log, running) = (log.clone(), running.clone());
            behind
                .start(Box::pin(async move {
                    assert_eq!(running.fetch_add(1, Ordering::SeqCst), 0, "two requests in flight");
                    tokio::time::sleep(Duration::from_millis(5 - i)).await;
                    log.lock().unwrap().push(i);
                    running.fetch_sub(1, Ordering::SeqCst);
                    Ok(())
                }))
                .await
                .unwrap();
        }
        behind.settle().await.unwrap();
        assert_eq!(*log.lock().unwrap(), vec![0, 1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn a_failure_reaches_the_next_write_and_only_once() {
        let behind = WriteBehind::default();
        behind.start(Box::pin(async { Err(Error::Closed("pipeline")) })).await.unwrap();
        let second = behind.start(Box::pin(async { Ok(()) })).await;
        assert!(matches!(second, Err(Error::Closed("pipeline"))), "{second:?}");
        // The second request was not started: nothing is in flight.
        behind.settle().await.unwrap();
        behind.start(Box::pin(async { Err(Error::Closed("command")) })).await.unwrap();
        assert!(matches!(behind.settle().await, Err(Error::Closed("command"))));
        behind.settle().await.unwrap();
    }

    #[tokio::test]
    async fn a_caller_that_stops_waiting_leaves_the_request_for_the_next() {
        let behind = Arc::new(WriteBehind::default());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        behind
            .start(Box::pin(async move {
                let _ = rx.await;
                Err(Error::Closed("slow"))
            }))
            .await
            .unwrap();
        // A settle that gives up before the answer.
        assert!(tokio::time::timeout(Duration::from_millis(20), behind.settle()).await.is_err());
        tx.send(()).unwrap();
        // The answer (and its error) is still there for the next caller.
        assert!(matches!(behind.settle().await, Err(Error::Closed("slow"))));
    }
}
