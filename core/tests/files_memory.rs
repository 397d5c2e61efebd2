//! 100 MB (or `PSREMOTE_FILES_MB`: `make files-1g` runs 1024) through `Client::copy` and
//! `Client::fetch` against the loopback endpoint, in a test binary of its own so that the
//! process's peak memory (VmHWM) is this test's alone.

mod common;

use std::path::Path;

use common::{DOMAIN_USER, Endpoint, PASSWORD, TempDir, block_on};
use psremote::auth::Mechanism;
use psremote::client::{Client, ClientConfig, CopyOptions, FetchOptions};

async fn client(ep: &Endpoint) -> Client {
    let cfg = ClientConfig::new("x", DOMAIN_USER, PASSWORD)
        .with_url(&ep.url)
        .unwrap()
        .with_trusted_hosts(["127.0.0.1"])
        .with_mechanism(Mechanism::Ntlm);
    Client::connect(cfg).await.unwrap()
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn data(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn assert_clean(ep: &Endpoint) {
    for counter in ["pipelines", "pools", "shells", "commands"] {
        assert_eq!(ep.wait_counter(counter, 0), 0, "{counter} left: {}", ep.state());
    }
}

/// Peak resident memory of this process (VmHWM), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// Whether two files hold the same bytes, read a MiB at a time.
fn same_content(a: &Path, b: &Path) -> bool {
    use std::io::Read;
    let (mut a, mut b) = (std::fs::File::open(a).unwrap(), std::fs::File::open(b).unwrap());
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = a.read(&mut x).unwrap();
        if n == 0 {
            return b.read(&mut y).unwrap() == 0;
        }
        if b.read_exact(&mut y[..n]).is_err() || x[..n] != y[..n] {
            return false;
        }
    }
}

/// 100 MB each way through psremote (the size in MiB from `PSREMOTE_FILES_MB`); the client's
/// peak memory stays far below the file's size and does not grow with it (a generous bound:
/// it streams).
#[test]
fn hundred_megabytes_in_bounded_memory() {
    let mib: usize = std::env::var("PSREMOTE_FILES_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let len = mib * 1024 * 1024;
    let ep = Endpoint::start(&[]);
    let here = TempDir::new("files-big-here");
    let there = TempDir::new("files-big-there");
    let src = here.0.join("big.bin");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&src).unwrap());
        let block = data(1 << 20);
        for _ in 0..mib {
            f.write_all(&block).unwrap();
        }
    }
    let remote = there.0.join("big.bin");
    let back = here.0.join("back.bin");
    let progress = std::sync::Arc::new(std::sync::Mutex::new((0u64, None)));
    let seen = progress.clone();
    let (c, f) = block_on(async {
        let client = client(&ep).await;
        let options = CopyOptions {
            progress: Some(std::sync::Arc::new(move |d, t| *seen.lock().unwrap() = (d, t))),
            ..CopyOptions::default()
        };
        let c = client.copy(&src, path_str(&remote), &options).await.unwrap();
        let f = client.fetch(path_str(&remote), &back, &FetchOptions::default()).await.unwrap();
        (c, f)
    });
    assert_eq!(*progress.lock().unwrap(), (len as u64, Some(len as u64)));
    assert_eq!((c.bytes, f.bytes), (len as u64, len as u64));
    let peak = peak_rss();
    eprintln!("{mib} MiB copied and fetched; peak RSS {} MiB", peak >> 20);
    assert_eq!(c.sha1, f.sha1);
    assert!(peak < 90 * 1024 * 1024, "peak RSS {peak} bytes for a {len}-byte file");
    assert!(same_content(&back, &src));
    assert_clean(&ep);
}
