//! The SQLite store's fault (SPEC §10 "TTL store errors"): another
//! connection holds the database's write lock for a while, as a second
//! engine process or a backup tool would. The engine's store meets a real
//! `SQLITE_BUSY` — reported as `StoreError::Locked` — and must fail closed
//! (T-2); nothing it committed before may be lost.
//!
//! The engine's store is opened with a zero busy timeout, so a locked write
//! fails at once instead of sleeping on the wall clock: the outcome depends
//! only on simulated events, and the trace stays byte-identical (INV-12).

use std::path::{Path, PathBuf};

use rusqlite::Connection;

/// Holds (or not) the write lock of one SQLite file.
pub struct SqliteLock {
    path: PathBuf,
    holder: Option<Connection>,
}

impl SqliteLock {
    /// A lock on the database at `path`, not held.
    pub fn new(path: &Path) -> Self {
        SqliteLock {
            path: path.to_path_buf(),
            holder: None,
        }
    }

    /// Takes the write lock (`BEGIN IMMEDIATE`: readers go on under WAL,
    /// writers get `SQLITE_BUSY`); call it only while not [held](Self::is_held).
    /// `Err` if it could not be taken; the message leaves out the file's
    /// path, a fresh temporary one per run, as it goes into the trace
    /// (INV-12).
    pub fn hold(&mut self) -> Result<(), String> {
        let conn =
            Connection::open(&self.path).map_err(|e| format!("cannot open the store: {e}"))?;
        conn.execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| format!("cannot lock the store: {e}"))?;
        self.holder = Some(conn);
        Ok(())
    }

    /// Gives the lock back (the holder wrote nothing: it rolls back).
    pub fn release(&mut self) {
        if let Some(conn) = self.holder.take() {
            let _ = conn.execute_batch("ROLLBACK");
        }
    }

    /// Whether the lock is held.
    pub fn is_held(&self) -> bool {
        self.holder.is_some()
    }
}
