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
//!
//! A request can also be built and sealed before the previous one is answered
//! ([`WriteBehind::start_prepared`]): sealing is bound to the connection that carries the
//! request, so a stream keeps one connection for its requests, its [`Lane`].

use std::future::Future;
use std::pin::Pin;

use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::transport::Lane;

/// A boxed future of the client's, sent to a task: kept off the callers' stacks.
pub type Request<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// The request in flight for one input stream (one pipeline, one cmd command).
#[derive(Debug, Default)]
pub struct WriteBehind {
    in_flight: tokio::sync::Mutex<Option<JoinHandle<Result<()>>>>,
    /// The stream's connection, from its first request sealed ahead.
    lane: std::sync::OnceLock<Lane>,
}

impl WriteBehind {
    /// Runs `prepare` (building and sealing the next request, on the stream's [`Lane`]) while
    /// the request in flight travels, then waits for that one (returning its error, if it
    /// failed: what `prepare` built is dropped unsent), then starts `send` with what `prepare`
    /// built and returns without waiting for it. Callers are served one at a time, so requests
    /// are prepared and sent in one order.
    pub async fn start_prepared<T: Send + 'static>(
        &self,
        prepare: Request<'_, T>,
        send: impl FnOnce(T) -> Request<'static, ()>,
    ) -> Result<()> {
        let mut slot = self.in_flight.lock().await;
        let ready = prepare.await?;
        wait(&mut slot).await?;
        *slot = Some(tokio::spawn(send(ready)));
        Ok(())
    }

    /// Waits until the request in flight is answered (its error, if it failed) and keeps the
    /// stream to the caller until the returned guard drops: a caller that sends a run of
    /// requests itself (on the [`Lane`]) while other writers wait their turn.
    pub async fn exclusive(&self) -> Result<tokio::sync::MutexGuard<'_, Option<JoinHandle<Result<()>>>>> {
        let mut slot = self.in_flight.lock().await;
        wait(&mut slot).await?;
        Ok(slot)
    }

    /// Waits until the request in flight is answered; its error, if it failed.
    pub async fn settle(&self) -> Result<()> {
        wait(&mut *self.in_flight.lock().await).await
    }

    /// The stream's lane, made by `make` on first use.
    pub fn lane(&self, make: impl FnOnce() -> Lane) -> &Lane {
        self.lane.get_or_init(make)
    }

    /// Hands the lane's connection back to the client's idle ones, once the stream ended.
    pub fn release_lane(&self) {
        if let Some(lane) = self.lane.get() {
            lane.release();
        }
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

    /// Starts `request` with nothing to prepare.
    async fn start(behind: &WriteBehind, request: Request<'static, ()>) -> Result<()> {
        behind.start_prepared(Box::pin(async { Ok(()) }), move |()| request).await
    }

    #[tokio::test]
    async fn requests_go_one_at_a_time_in_order() {
        let behind = WriteBehind::default();
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let running = Arc::new(AtomicUsize::new(0));
        for i in 0..5u64 {
            let (log, running) = (log.clone(), running.clone());
            start(
                &behind,
                Box::pin(async move {
                    assert_eq!(running.fetch_add(1, Ordering::SeqCst), 0, "two requests in flight");
                    tokio::time::sleep(Duration::from_millis(5 - i)).await;
                    log.lock().unwrap().push(i);
                    running.fetch_sub(1, Ordering::SeqCst);
                    Ok(())
                }),
            )
            .await
            .unwrap();
        }
        behind.settle().await.unwrap();
        assert_eq!(*log.lock().unwrap(), vec![0, 1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn a_failure_reaches_the_next_write_and_only_once() {
        let behind = WriteBehind::default();
        start(&behind, Box::pin(async { Err(Error::Closed("pipeline")) })).await.unwrap();
        let second = start(&behind, Box::pin(async { Ok(()) })).await;
        assert!(matches!(second, Err(Error::Closed("pipeline"))), "{second:?}");
        // The second request was not started: nothing is in flight.
        behind.settle().await.unwrap();
        start(&behind, Box::pin(async { Err(Error::Closed("command")) })).await.unwrap();
        assert!(matches!(behind.settle().await, Err(Error::Closed("command"))));
        behind.settle().await.unwrap();
    }

    #[tokio::test]
    async fn the_next_request_is_prepared_while_the_previous_travels() {
        let behind = WriteBehind::default();
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let first = log.clone();
        start(
            &behind,
            Box::pin(async move {
                let _ = rx.await;
                first.lock().unwrap().push("first answered");
                Ok(())
            }),
        )
        .await
        .unwrap();
        let (prep, sent) = (log.clone(), log.clone());
        let second = behind.start_prepared(
            Box::pin(async move {
                prep.lock().unwrap().push("second prepared");
                tx.send(()).unwrap();
                Ok(2u8)
            }),
            move |n| {
                Box::pin(async move {
                    assert_eq!(n, 2);
                    sent.lock().unwrap().push("second sent");
                    Ok(())
                })
            },
        );
        second.await.unwrap();
        behind.settle().await.unwrap();
        assert_eq!(*log.lock().unwrap(), vec!["second prepared", "first answered", "second sent"]);
        // A failed request: what was prepared after it is dropped unsent.
        start(&behind, Box::pin(async { Err(Error::Closed("pipeline")) })).await.unwrap();
        let third = behind.start_prepared(Box::pin(async { Ok(3u8) }), |_| Box::pin(async { panic!("sent") }));
        assert!(matches!(third.await, Err(Error::Closed("pipeline"))));
    }

    #[tokio::test]
    async fn a_caller_that_stops_waiting_leaves_the_request_for_the_next() {
        let behind = Arc::new(WriteBehind::default());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        start(
            &behind,
            Box::pin(async move {
                let _ = rx.await;
                Err(Error::Closed("slow"))
            }),
        )
        .await
        .unwrap();
        // A settle that gives up before the answer.
        assert!(tokio::time::timeout(Duration::from_millis(20), behind.settle()).await.is_err());
        tx.send(()).unwrap();
        // The answer (and its error) is still there for the next caller.
        assert!(matches!(behind.settle().await, Err(Error::Closed("slow"))));
    }
}
