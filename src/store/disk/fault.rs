//! The store's file, with a test hook: when `PUSHGATE_DISK_FAULTS` names a
//! path and that path exists, every write, resize and sync fails with
//! `ENOSPC` (disk full), exactly as a full filesystem would answer. Tests
//! create and remove the file to fill and free the "disk"; with the variable
//! unset this is redb's own file backend and nothing else.

use std::fs::File;
use std::io;
use std::path::PathBuf;

use redb::StorageBackend;
use redb::backends::FileBackend;

/// The environment variable naming the hook's switch file.
pub const FAULTS_ENV: &str = "PUSHGATE_DISK_FAULTS";

/// redb's file backend behind the disk-full switch.
#[derive(Debug)]
pub struct FaultyFile {
    inner: FileBackend,
    switch: Option<PathBuf>,
}

impl FaultyFile {
    /// Wraps `file` (locked by redb's backend: a second process gets
    /// `DatabaseAlreadyOpen`).
    pub fn new(file: File, switch: Option<PathBuf>) -> Result<Self, redb::DatabaseError> {
        Ok(Self {
            inner: FileBackend::new(file)?,
            switch,
        })
    }

    fn check(&self) -> io::Result<()> {
        match &self.switch {
            Some(path) if path.exists() => Err(io::Error::from_raw_os_error(28)),
            _ => Ok(()),
        }
    }
}

impl StorageBackend for FaultyFile {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn read(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        self.inner.read(offset, len)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.check()?;
        self.inner.set_len(len)
    }

    fn sync_data(&self, eventual: bool) -> io::Result<()> {
        self.check()?;
        self.inner.sync_data(eventual)
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.check()?;
        self.inner.write(offset, data)
    }
}
