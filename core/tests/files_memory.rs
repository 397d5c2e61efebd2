//! 100 MB through `Client::copy` and `Client::fetch` against the loopback endpoint, in a test
//! binary of its own so that the process's peak memory (VmHWM) is this test's alone.

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

/// 100 MB each way through psremote; the client's peak memory stays far below the file's
/// size (a generous bound: it streams). The comparison at the end reads both files, so the
/// peak is taken before it.
#[test]
fn hundred_megabytes_in_bounded_memory() {
    const LEN: usize = 100 * 1024 * 1024;
    let ep = Endpoint::start(&[]);
    let here = TempDir::new("files-big-here");
    let there = TempDir::new("files-big-there");
    let src = here.0.join("big.bin");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&src).unwrap());
        let block = data(1 << 20);
        for _ in 0..LEN >> 20 {
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
    assert_eq!(*progress.lock().unwrap(), (LEN as u64, Some(LEN as u64)));
    assert_eq!((c.bytes, f.bytes), (LEN as u64, LEN as u64));
    let peak = peak_rss();
    assert_eq!(c.sha1, f.sha1);
    assert!(peak < 90 * 1024 * 1024, "peak RSS {peak} bytes for a {LEN}-byte file");
    assert!(std::fs::read(&back).unwrap() == std::fs::read(&src).unwrap());
    assert_clean(&ep);
}
