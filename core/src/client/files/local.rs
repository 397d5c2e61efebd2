//! The local side of a transfer: the copy's source, opened and checked before anything is
//! sent, and the fetch's `.part` file, which replaces the destination only when complete.

use std::io;
use std::path::{Path, PathBuf};

use tokio::io::AsyncReadExt as _;

use super::file_error;
use crate::error::{Error, Result};
use crate::file_error::{FileErrorKind, FileSide};

/// The copy's source, open for reading.
#[derive(Debug)]
pub(super) struct Source {
    pub file: tokio::fs::File,
    pub path: PathBuf,
    pub len: u64,
}

/// Opens `path` for a copy: it must exist, be readable and be a file.
pub(super) async fn open_source(path: &Path) -> Result<Source> {
    let shown = path.display().to_string();
    let meta = tokio::fs::metadata(path).await.map_err(|e| io_error(&e, &shown, "cannot read"))?;
    if meta.is_dir() {
        return Err(file_error(
            FileErrorKind::IsADirectory,
            FileSide::Local,
            &shown,
            "is a directory; copy takes a file",
        ));
    }
    let file = tokio::fs::File::open(path).await.map_err(|e| io_error(&e, &shown, "cannot open"))?;
    Ok(Source { file, path: path.to_owned(), len: meta.len() })
}

/// Reads until `buf` is full or the file ends; returns how many bytes were read.
pub(super) async fn read_full(source: &mut Source, buf: &mut [u8]) -> Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = source
            .file
            .read(&mut buf[filled..])
            .await
            .map_err(|e| io_error(&e, &source.path.display().to_string(), "cannot read"))?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

/// A local I/O failure as a [`crate::FileError`] of the local side.
pub(super) fn io_error(e: &io::Error, path: &str, action: &str) -> Error {
    let kind = match e.kind() {
        io::ErrorKind::NotFound => FileErrorKind::NotFound,
        io::ErrorKind::PermissionDenied => FileErrorKind::AccessDenied,
        io::ErrorKind::IsADirectory => FileErrorKind::IsADirectory,
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => FileErrorKind::DiskFull,
        io::ErrorKind::InvalidFilename | io::ErrorKind::InvalidInput => FileErrorKind::InvalidPath,
        _ => FileErrorKind::Io,
    };
    file_error(kind, FileSide::Local, path, format!("{action}: {e}"))
}

/// Where a fetch writes: `.<name>.psremote-<random>.part` beside the destination, created
/// new. Removed on drop unless [`PartFile::commit`] renamed it over the destination.
#[derive(Debug)]
pub(super) struct PartFile {
    pub file: Option<tokio::fs::File>,
    pub part: PathBuf,
    pub dest: PathBuf,
    done: bool,
}

impl PartFile {
    /// Checks the destination (not a directory, its folder exists) and creates the part file.
    pub async fn create(dest: &Path) -> Result<Self> {
        let shown = dest.display().to_string();
        if tokio::fs::metadata(dest).await.is_ok_and(|m| m.is_dir()) {
            return Err(file_error(
                FileErrorKind::IsADirectory,
                FileSide::Local,
                &shown,
                "is a directory; fetch writes a file (give its full path)",
            ));
        }
        let Some(name) = dest.file_name() else {
            return Err(file_error(FileErrorKind::InvalidPath, FileSide::Local, &shown, "does not name a file"));
        };
        let folder = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        match tokio::fs::metadata(&folder).await {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(file_error(
                    FileErrorKind::ParentNotFound,
                    FileSide::Local,
                    &shown,
                    format!("{} is not a folder", folder.display()),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(file_error(
                    FileErrorKind::ParentNotFound,
                    FileSide::Local,
                    &shown,
                    format!("the folder {} does not exist", folder.display()),
                ));
            }
            Err(e) => return Err(io_error(&e, &folder.display().to_string(), "cannot read the folder")),
        }
        let part = folder.join(format!(".{}.psremote-{:016x}.part", name.to_string_lossy(), rand::random::<u64>()));
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&part)
            .await
            .map_err(|e| io_error(&e, &shown, "cannot create a file beside"))?;
        Ok(Self { file: Some(file), part, dest: dest.to_owned(), done: false })
    }

    /// Writes the next bytes.
    pub async fn write(&mut self, data: &[u8]) -> Result<()> {
        use tokio::io::AsyncWriteExt as _;
        let shown = self.dest.display().to_string();
        match self.file.as_mut() {
            Some(f) => f.write_all(data).await.map_err(|e| io_error(&e, &shown, "cannot write")),
            None => Err(Error::Closed("fetch destination")),
        }
    }

    /// Flushes the data to disk and renames the part file over the destination.
    pub async fn commit(mut self) -> Result<PathBuf> {
        use tokio::io::AsyncWriteExt as _;
        let shown = self.dest.display().to_string();
        if let Some(mut f) = self.file.take() {
            f.flush().await.map_err(|e| io_error(&e, &shown, "cannot write"))?;
            f.sync_all().await.map_err(|e| io_error(&e, &shown, "cannot write"))?;
        }
        tokio::fs::rename(&self.part, &self.dest).await.map_err(|e| io_error(&e, &shown, "cannot replace"))?;
        self.done = true;
        Ok(self.dest.clone())
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if !self.done {
            drop(self.file.take());
            if let Err(e) = std::fs::remove_file(&self.part)
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(path = %self.part.display(), error = %e, "could not remove a partial fetch");
            }
        }
    }
}
