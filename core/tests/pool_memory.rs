//! What an open, idle runspace pool costs the client: the heap it holds while it waits for
//! work (issue 13: at most 60 KB). Pools open on one client, so they share its connections; an
//! idle pool keeps no Receive pending, no connection of its own and no task but its host
//! worker's. Measured with a counting allocator, in a test binary of its own.

// A counting global allocator needs `unsafe impl GlobalAlloc`; it only forwards to `System`.
#![allow(unsafe_code)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Endpoint, block_on, ntlm_config};
use psremote::client::{Client, PoolConfig, RunspacePool};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; the counter only observes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const POOLS: usize = 40;
/// Issue 13's target for an open idle pool.
const BUDGET: usize = 60 * 1024;

#[test]
fn an_idle_pool_holds_little_memory() {
    let ep = Endpoint::start(&[]);
    let cfg = ntlm_config(&ep);
    block_on(async {
        let client = Client::connect(cfg).await.unwrap();
        // One pool first: what every pool shares (the runtime's and the connection's buffers,
        // lazily built statics) is in the baseline.
        let first = RunspacePool::open(&client, PoolConfig::default()).await.unwrap();
        let before = LIVE.load(Ordering::SeqCst);
        let mut pools = Vec::new();
        for _ in 0..POOLS {
            pools.push(RunspacePool::open(&client, PoolConfig::default()).await.unwrap());
        }
        let per_pool = LIVE.load(Ordering::SeqCst).saturating_sub(before) / POOLS;
        eprintln!("an open idle pool holds {per_pool} bytes of heap");
        assert!(per_pool <= BUDGET, "an open idle pool holds {per_pool} bytes (budget {BUDGET})");
        for pool in pools {
            pool.close().await.unwrap();
        }
        first.close().await.unwrap();
    });
    assert_eq!(ep.wait_counter("pools", 0), 0, "{}", ep.state());
}
