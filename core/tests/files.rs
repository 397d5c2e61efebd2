//! `Client::copy` and `Client::fetch` against the loopback endpoint, which carries out both
//! psremote's scripts and pypsrp 0.9.1's natively (testserver/psremote_testserver/psrp_files.py).
//! pypsrp is the independent peer: what psremote copies, pypsrp fetches intact, and the other
//! way round. Bad input gives a typed error, leaves nothing on the server (no shell, no
//! pipeline, no temporary file) and nothing half-written here.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command as Process;

use common::{DOMAIN_USER, Endpoint, PASSWORD, TempDir, block_on};
use psremote::auth::Mechanism;
use psremote::client::{Client, ClientConfig, CopyOptions, FetchOptions};
use psremote::{Error, FileErrorKind, FileSide};

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

/// pypsrp 0.9.1's copy or fetch through the endpoint: Ok(returned path) or Err(its error text).
fn pypsrp(ep: &Endpoint, op: &str, src: &Path, dest: &Path) -> Result<String, String> {
    let out = Process::new(common::python_path())
        .args(["-m", "psremote_testserver.pypsrp_files", op, &ep.port.to_string(), DOMAIN_USER, PASSWORD])
        .arg(src)
        .arg(dest)
        .current_dir(common::workspace_root())
        .output()
        .expect("run pypsrp");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    match text.strip_prefix("OK ") {
        Some(path) => Ok(path.to_owned()),
        None => Err(format!("{text} {}", String::from_utf8_lossy(&out.stderr))),
    }
}

/// Deterministic test data.
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

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// Nothing is left on the endpoint: no shell, pool or pipeline.
fn assert_clean(ep: &Endpoint) {
    for counter in ["pipelines", "pools", "shells", "commands"] {
        assert_eq!(ep.wait_counter(counter, 0), 0, "{counter} left: {}", ep.state());
    }
}

fn file_error(e: &Error) -> (FileErrorKind, FileSide) {
    let f = e.file().unwrap_or_else(|| panic!("not a file error: {e:?}"));
    (f.kind, f.side)
}

fn roundtrip(ep: &Endpoint, len: usize, name: &str) {
    let here = TempDir::new("files-here");
    let there = TempDir::new("files-there");
    let original = data(len);
    let src = here.0.join(name);
    std::fs::write(&src, &original).unwrap();

    // psremote copies, pypsrp fetches.
    let remote = there.0.join(format!("from-psremote-{name}"));
    let c = block_on(async { client(ep).await.copy(&src, path_str(&remote), &CopyOptions::default()).await.unwrap() });
    assert_eq!(c.remote_path, path_str(&remote));
    assert_eq!(c.bytes, len as u64);
    let back = here.0.join(format!("pypsrp-fetched-{name}"));
    match pypsrp(ep, "fetch", &remote, &back) {
        Ok(_) => assert!(std::fs::read(&back).unwrap() == original, "pypsrp fetched other bytes"),
        // pypsrp's fetch script cannot send an empty file (TransformFinalBlock on $null), on
        // Windows as on the endpoint; psremote's copy of it is checked on disk instead.
        Err(e) if len == 0 => {
            assert!(e.contains("TransformFinalBlock"), "{e}");
            assert_eq!(std::fs::read(&remote).unwrap(), original);
        }
        Err(e) => panic!("pypsrp fetch failed: {e}"),
    }

    // pypsrp copies, psremote fetches.
    let remote = there.0.join(format!("from-pypsrp-{name}"));
    pypsrp(ep, "copy", &src, &remote).expect("pypsrp copy");
    let fetched = here.0.join(format!("psremote-fetched-{name}"));
    let f = block_on(async {
        client(ep).await.fetch(path_str(&remote), &fetched, &FetchOptions::default()).await.unwrap()
    });
    assert_eq!(f.local_path, fetched);
    assert_eq!(f.bytes, len as u64);
    assert!(std::fs::read(&fetched).unwrap() == original, "psremote fetched other bytes");
    assert_clean(ep);
}

#[test]
fn interop_with_pypsrp_empty_one_byte_and_chunked() {
    let ep = Endpoint::start(&[]);
    roundtrip(&ep, 0, "empty.bin");
    roundtrip(&ep, 1, "one.bin");
    roundtrip(&ep, 3 * 1024 * 1024 + 7, "several-chunks.bin");
    roundtrip(&ep, 1000, "données – ünïcødé 文件.txt");
}

#[test]
fn missing_sources_directories_and_missing_folders_are_typed_and_leave_nothing() {
    let ep = Endpoint::start(&[]);
    let here = TempDir::new("files-bad-here");
    let there = TempDir::new("files-bad-there");
    let src = here.0.join("a.txt");
    std::fs::write(&src, b"abc").unwrap();
    let existing = there.0.join("exists.txt");
    std::fs::write(&existing, b"xyz").unwrap();
    block_on(async {
        let client = client(&ep).await;
        let copy = |s: PathBuf, d: String| {
            let client = client.clone();
            async move { client.copy(&s, &d, &CopyOptions::default()).await.unwrap_err() }
        };
        let fetch = |s: String, d: PathBuf| {
            let client = client.clone();
            async move { client.fetch(&s, &d, &FetchOptions::default()).await.unwrap_err() }
        };
        let dest = path_str(&there.0.join("out.txt")).to_owned();
        let e = copy(here.0.join("missing.txt"), dest.clone()).await;
        assert_eq!(file_error(&e), (FileErrorKind::NotFound, FileSide::Local));
        let e = copy(here.0.clone(), dest.clone()).await;
        assert_eq!(file_error(&e), (FileErrorKind::IsADirectory, FileSide::Local));
        let e = copy(src.clone(), path_str(&there.0).to_owned()).await;
        assert_eq!(file_error(&e), (FileErrorKind::IsADirectory, FileSide::Remote), "{e}");
        let e = copy(src.clone(), path_str(&there.0.join("no-folder/out.txt")).to_owned()).await;
        assert_eq!(file_error(&e), (FileErrorKind::ParentNotFound, FileSide::Remote), "{e}");
        assert_eq!(
            e.file().unwrap().record.as_ref().unwrap().fully_qualified_error_id.as_deref(),
            Some("PSRemote.File.ParentNotFound")
        );

        let local = here.0.join("fetched.txt");
        let e = fetch(path_str(&there.0.join("missing.txt")).to_owned(), local.clone()).await;
        assert_eq!(file_error(&e), (FileErrorKind::NotFound, FileSide::Remote), "{e}");
        let e = fetch(path_str(&there.0).to_owned(), local.clone()).await;
        assert_eq!(file_error(&e), (FileErrorKind::IsADirectory, FileSide::Remote), "{e}");
        let e = fetch(path_str(&existing).to_owned(), here.0.clone()).await;
        assert_eq!(file_error(&e), (FileErrorKind::IsADirectory, FileSide::Local), "{e}");
        let e = fetch(path_str(&existing).to_owned(), here.0.join("no-folder/x.txt")).await;
        assert_eq!(file_error(&e), (FileErrorKind::ParentNotFound, FileSide::Local), "{e}");
    });
    assert_eq!(files_in(&here.0), ["a.txt"]);
    assert_eq!(files_in(&there.0), ["exists.txt"]);
    assert_clean(&ep);
}

/// Access denied as root: /sys refuses new files to everyone and /proc/sys/vm/compact_memory is
/// write-only, so both sides meet a real EACCES.
#[test]
fn access_denied_on_either_side() {
    let ep = Endpoint::start(&[]);
    let here = TempDir::new("files-denied");
    let src = here.0.join("a.txt");
    std::fs::write(&src, b"abc").unwrap();
    let unreadable = Path::new("/proc/sys/vm/compact_memory");
    block_on(async {
        let client = client(&ep).await;
        let e = client.copy(&src, "/sys/psremote-denied.txt", &CopyOptions::default()).await.unwrap_err();
        assert_eq!(file_error(&e), (FileErrorKind::AccessDenied, FileSide::Remote), "{e}");
        let e = client.copy(unreadable, "/tmp/psremote-never.txt", &CopyOptions::default()).await.unwrap_err();
        assert_eq!(file_error(&e), (FileErrorKind::AccessDenied, FileSide::Local), "{e}");
        let e = client.fetch(path_str(unreadable), &here.0.join("x"), &FetchOptions::default()).await.unwrap_err();
        assert_eq!(file_error(&e), (FileErrorKind::AccessDenied, FileSide::Remote), "{e}");
        let e = client
            .fetch(path_str(&src), Path::new("/sys/psremote-denied.txt"), &FetchOptions::default())
            .await
            .unwrap_err();
        assert_eq!(file_error(&e), (FileErrorKind::AccessDenied, FileSide::Local), "{e}");
    });
    assert!(!Path::new("/tmp/psremote-never.txt").exists());
    assert_eq!(files_in(&here.0), ["a.txt"]);
    assert_clean(&ep);
}

/// A 64 KiB tmpfs (root may mount one here), unmounted on drop.
struct TinyDisk(TempDir);

impl TinyDisk {
    fn mount() -> Self {
        let dir = TempDir::new("files-tiny-disk");
        let ok = Process::new("mount").args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"]).arg(&dir.0).status().unwrap();
        assert!(ok.success(), "mounting a tmpfs needs root");
        TinyDisk(dir)
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = Process::new("umount").arg(&self.0.0).status();
    }
}

#[test]
fn full_disk_on_either_side() {
    let ep = Endpoint::start(&[]);
    let disk = TinyDisk::mount();
    let here = TempDir::new("files-full");
    let big = here.0.join("big.bin");
    std::fs::write(&big, data(512 * 1024)).unwrap();
    block_on(async {
        let client = client(&ep).await;
        let dest = disk.0.0.join("big.bin");
        let e = client.copy(&big, path_str(&dest), &CopyOptions::default()).await.unwrap_err();
        assert_eq!(file_error(&e), (FileErrorKind::DiskFull, FileSide::Remote), "{e}");
        let e = client.fetch(path_str(&big), &dest, &FetchOptions::default()).await.unwrap_err();
        assert_eq!(file_error(&e), (FileErrorKind::DiskFull, FileSide::Local), "{e}");
    });
    assert_eq!(files_in(&disk.0.0), Vec::<String>::new(), "nothing half-written on the full disk");
    assert_clean(&ep);
}

/// The endpoint flips a byte of the first chunk it writes (copy) or sends (fetch).
#[test]
fn corrupted_chunk_is_a_hash_mismatch_and_nothing_is_kept() {
    let ep = Endpoint::start(&["--corrupt-file-chunk"]);
    let here = TempDir::new("files-corrupt-here");
    let there = TempDir::new("files-corrupt-there");
    let src = here.0.join("a.bin");
    std::fs::write(&src, data(300_000)).unwrap();
    let remote_src = there.0.join("source.bin");
    std::fs::write(&remote_src, data(300_000)).unwrap();
    block_on(async {
        let client = client(&ep).await;
        let e = client.copy(&src, path_str(&there.0.join("a.bin")), &CopyOptions::default()).await.unwrap_err();
        assert_eq!(file_error(&e), (FileErrorKind::HashMismatch, FileSide::Remote), "{e}");
        let f = e.file().unwrap();
        assert!(f.expected_sha1.is_some() && f.actual_sha1.is_some() && f.expected_sha1 != f.actual_sha1, "{f:?}");
        let e = client.fetch(path_str(&remote_src), &here.0.join("b.bin"), &FetchOptions::default()).await.unwrap_err();
        assert_eq!(file_error(&e), (FileErrorKind::HashMismatch, FileSide::Local), "{e}");
    });
    assert_eq!(files_in(&here.0), ["a.bin"]);
    assert_eq!(files_in(&there.0), ["source.bin"]);
    assert_clean(&ep);
}

/// Variables in remote paths expand on the server (`%VAR%`, `$env:VAR`), or travel verbatim.
#[test]
fn environment_variables_in_remote_paths() {
    let there = TempDir::new("files-env");
    let ep = Endpoint::launch(&[], false, &[("PSREMOTE_FILES_DIR", path_str(&there.0))]);
    let here = TempDir::new("files-env-here");
    let src = here.0.join("a.txt");
    std::fs::write(&src, b"hello").unwrap();
    block_on(async {
        let client = client(&ep).await;
        let c = client.copy(&src, "%PSREMOTE_FILES_DIR%/one.txt", &CopyOptions::default()).await.unwrap();
        assert_eq!(c.remote_path, path_str(&there.0.join("one.txt")));
        let f = client
            .fetch("$env:PSREMOTE_FILES_DIR/one.txt", &here.0.join("b.txt"), &FetchOptions::default())
            .await
            .unwrap();
        assert_eq!(f.bytes, 5);
        let verbatim = CopyOptions { expand_variables: false, ..CopyOptions::default() };
        let e = client.copy(&src, "%PSREMOTE_FILES_DIR%/two.txt", &verbatim).await.unwrap_err();
        assert_eq!(file_error(&e), (FileErrorKind::ParentNotFound, FileSide::Remote), "{e}");
    });
    assert_eq!(std::fs::read(there.0.join("one.txt")).unwrap(), b"hello");
    assert_clean(&ep);
}

/// The endpoint closes the connection, unanswered, on the third Send of pipeline input (a
/// copy) and on the third command-level Receive (a fetch): a network failure in the middle of
/// the transfer. A Send is never sent twice: the copy is a typed error, the pool is deleted (the
/// endpoint back to zero), the server's temporary file is gone. A Receive may be: the fetch
/// sends it again on a new connection and completes.
#[test]
fn a_connection_dropped_mid_transfer_fails_a_copy_and_is_recovered_by_a_fetch() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    let len = 3_000_000;
    let here = TempDir::new("files-drop-here");
    let there = TempDir::new("files-drop-there");
    let src = here.0.join("a.bin");
    std::fs::write(&src, data(len)).unwrap();
    let remote_src = there.0.join("source.bin");
    std::fs::write(&remote_src, data(len)).unwrap();

    let done = Arc::new(AtomicU64::new(0));
    let seen = done.clone();
    let progress: psremote::client::ProgressCallback = Arc::new(move |n, _| seen.store(n, Ordering::SeqCst));

    let ep = Endpoint::start(&["--drop-connection", "send:3"]);
    block_on(async {
        let client = client(&ep).await;
        let options =
            CopyOptions { chunk_size: Some(64 * 1024), progress: Some(progress.clone()), ..CopyOptions::default() };
        let e = client.copy(&src, path_str(&there.0.join("a.bin")), &options).await.unwrap_err();
        assert_eq!(e.kind(), psremote::ErrorKind::Transport, "{e:?}");
    });
    let sent = done.load(Ordering::SeqCst);
    assert!(sent > 0 && sent < len as u64, "the drop came mid-copy ({sent} bytes sent)");
    assert_eq!(ep.counter("connections_dropped"), 1, "{}", ep.state());
    assert_clean(&ep);
    // The server removes its temporary file as the stopped pipeline unwinds, which may end just
    // after the Delete is answered: wait for it (bounded), then require it gone.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while files_in(&there.0) != ["source.bin"] && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(files_in(&there.0), ["source.bin"], "no temporary file left on the server");
    drop(ep);

    // A Receive dropped unanswered is sent again on a new connection: the fetch completes.
    let ep = Endpoint::start(&["--drop-connection", "receive:3"]);
    block_on(async {
        let client = client(&ep).await;
        client.fetch(path_str(&remote_src), &here.0.join("b.bin"), &FetchOptions::default()).await.unwrap();
    });
    assert_eq!(ep.counter("connections_dropped"), 1, "{}", ep.state());
    assert_clean(&ep);
    assert_eq!(std::fs::read(here.0.join("b.bin")).unwrap(), data(len), "the fetched file is whole");
}
