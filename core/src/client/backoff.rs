//! Pacing of Receive loops against a server that answers a Receive at once with nothing.
//!
//! A Receive asks the server to hold the request until there is output or the OperationTimeout
//! passes (MS-WSMV 3.1.4.14): a healthy server answers with data, or with the OperationTimeout
//! fault after holding the request. A server that answers every Receive at once with that fault
//! (or with an empty ReceiveResponse) would otherwise get hundreds of Receives a second. After
//! such a Receive the loop waits before the next one, doubling the wait from [`FIRST_WAIT`] up
//! to [`MAX_WAIT`] (and never past the OperationTimeout); a Receive that brings anything, or that
//! the server held, resets it, so a server holding its Receives sees no added delay.
//!
//! [`ReceiveBackoff`] decides (time is passed in); [`pause`] waits, giving up as soon as the
//! loop's owner stops it (a closed or disconnected pool, a terminated command).

use std::time::Duration;

/// The wait after the first Receive that came back at once with nothing.
pub const FIRST_WAIT: Duration = Duration::from_millis(50);
/// The longest wait between two Receives that came back at once with nothing.
pub const MAX_WAIT: Duration = Duration::from_secs(5);
/// A Receive answered within this long (or within half the OperationTimeout, if less) was not
/// held by the server.
const HELD: Duration = Duration::from_secs(1);
/// How often [`pause`] checks whether its loop was stopped.
const STOP_CHECK: Duration = Duration::from_millis(25);

/// The back-off state of one Receive loop.
#[derive(Debug, Clone)]
pub(crate) struct ReceiveBackoff {
    operation_timeout: Duration,
    /// The wait before the next Receive, as the last one decided.
    wait: Duration,
}

impl ReceiveBackoff {
    /// For Receives that ask the server to hold them for `operation_timeout`.
    pub fn new(operation_timeout: Duration) -> Self {
        Self { operation_timeout, wait: Duration::ZERO }
    }

    /// Called after each Receive: `idle` when it brought nothing (the OperationTimeout fault, or
    /// a reply with no data and no change of state), `took` how long it was out. Returns how long
    /// to wait before the next Receive: zero after a Receive that brought something or that the
    /// server held (which resets the back-off), else the last wait doubled.
    pub fn after_receive(&mut self, idle: bool, took: Duration) -> Duration {
        if !idle || took >= HELD.min(self.operation_timeout / 2) {
            self.wait = Duration::ZERO;
        } else {
            let cap = MAX_WAIT.min(self.operation_timeout);
            self.wait = if self.wait.is_zero() { FIRST_WAIT.min(cap) } else { (self.wait * 2).min(cap) };
        }
        self.wait
    }

    /// The wait [`after_receive`](Self::after_receive) last decided on.
    pub fn next_wait(&self) -> Duration {
        self.wait
    }
}

/// Waits `wait`, or less if `stopped` becomes true first (checked every 25 ms). Returns whether
/// it was stopped.
pub(crate) async fn pause(wait: Duration, stopped: impl Fn() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if stopped() {
            return true;
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return false;
        }
        tokio::time::sleep((deadline - now).min(STOP_CHECK)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT_ONCE: Duration = Duration::from_millis(2);

    #[test]
    fn immediate_empty_receives_double_the_wait_up_to_the_cap() {
        let mut b = ReceiveBackoff::new(Duration::from_secs(20));
        let waits: Vec<_> = (0..10).map(|_| b.after_receive(true, AT_ONCE).as_millis()).collect();
        assert_eq!(waits, [50, 100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
    }

    #[test]
    fn data_or_a_held_receive_resets_it() {
        let mut b = ReceiveBackoff::new(Duration::from_secs(20));
        b.after_receive(true, AT_ONCE);
        assert_eq!(b.after_receive(true, AT_ONCE), Duration::from_millis(100));
        assert_eq!(b.after_receive(false, AT_ONCE), Duration::ZERO);
        assert_eq!(b.after_receive(true, AT_ONCE), FIRST_WAIT);
        // Held for the OperationTimeout (or a server's lower MaxTimeout): no wait at all.
        assert_eq!(b.after_receive(true, Duration::from_secs(20)), Duration::ZERO);
        assert_eq!(b.after_receive(true, Duration::from_secs(3)), Duration::ZERO);
        assert_eq!(b.after_receive(true, AT_ONCE), FIRST_WAIT);
    }

    #[test]
    fn the_wait_never_passes_a_short_operation_timeout() {
        let mut b = ReceiveBackoff::new(Duration::from_secs(1));
        let last = (0..10).map(|_| b.after_receive(true, AT_ONCE)).last().unwrap();
        assert_eq!(last, Duration::from_secs(1));
        // Half of a one-second OperationTimeout counts as held.
        assert_eq!(b.after_receive(true, Duration::from_millis(600)), Duration::ZERO);
    }

    #[test]
    fn pause_ends_once_stopped() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        rt.block_on(async {
            assert!(!pause(Duration::from_millis(30), || false).await);
            // Stopped on the third check: a 5 s wait that ends after two 25 ms slices.
            let checks = std::cell::Cell::new(0);
            let stopped = pause(MAX_WAIT, || {
                checks.set(checks.get() + 1);
                checks.get() >= 3
            });
            assert!(stopped.await);
            assert_eq!(checks.get(), 3);
        });
    }
}
