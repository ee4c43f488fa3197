//! The embedded default [`TtlStore`]: SQLite in WAL mode with relaxed sync
//! (T-1). It is cache metadata, not precious data, but committed rows are
//! never thrown away: a file that is not a database is reported, never
//! deleted or recreated.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, ErrorCode, OptionalExtension};

use super::{StoreError, TtlRow, TtlStore};

/// Default busy timeout of [`SqliteTtlStore::open`], in milliseconds.
const DEFAULT_BUSY_TIMEOUT_MS: u64 = 5000;

/// Schema (T-1). Created inside a write transaction at open, so that opening
/// a database another connection holds locked reports [`StoreError::Locked`].
const SCHEMA: &str = "BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS calls (
    call_key TEXT PRIMARY KEY NOT NULL,
    storage_key TEXT NOT NULL,
    expiration INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS calls_expiration ON calls(expiration);
COMMIT;";

const SELECT: &str = "SELECT storage_key, expiration FROM calls WHERE call_key = ?1";

/// Insert when absent; a present row is never touched.
const INSERT_IF_ABSENT: &str = "INSERT INTO calls (call_key, storage_key, expiration) \
     VALUES (?1, ?2, ?3) ON CONFLICT(call_key) DO NOTHING";

/// Insert when absent; replace a present row only if its storage key still
/// equals the compare value (?4). One statement, so atomic (T-4).
const COMPARE_AND_UPSERT: &str = "INSERT INTO calls (call_key, storage_key, expiration) \
     VALUES (?1, ?2, ?3) ON CONFLICT(call_key) DO UPDATE SET \
     storage_key = excluded.storage_key, expiration = excluded.expiration \
     WHERE calls.storage_key = ?4";

/// Bounded-batch GC (T-5): strictly `expiration < now`, at most `?2` rows.
const GC: &str = "DELETE FROM calls WHERE rowid IN \
     (SELECT rowid FROM calls WHERE expiration < ?1 LIMIT ?2)";

/// A [`TtlStore`] backed by SQLite: table
/// `calls(call_key TEXT PRIMARY KEY, storage_key TEXT NOT NULL, expiration INTEGER NOT NULL)`
/// with an index on `expiration`; `journal_mode=WAL`, `synchronous=NORMAL`,
/// a busy timeout. The connection sits behind a mutex, so the store is
/// `Send + Sync`; several stores (connections) may share one file.
#[derive(Debug)]
pub struct SqliteTtlStore {
    conn: Mutex<Connection>,
    path: PathBuf,
}

/// Which phase an error happened in: at open, anything unexpected means the
/// store could not be opened; later it is an SQL or I/O error.
#[derive(Clone, Copy)]
enum Phase {
    Open,
    Run,
}

fn map_error(path: &Path, phase: Phase, err: rusqlite::Error) -> StoreError {
    let path = path.to_path_buf();
    match err.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Locked { path },
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => StoreError::Corrupt {
            path,
            reason: err.to_string(),
        },
        _ => match phase {
            Phase::Open => StoreError::Open {
                path,
                reason: err.to_string(),
            },
            Phase::Run => match err.sqlite_error_code() {
                Some(
                    ErrorCode::SystemIoFailure
                    | ErrorCode::DiskFull
                    | ErrorCode::CannotOpen
                    | ErrorCode::PermissionDenied
                    | ErrorCode::ReadOnly,
                ) => StoreError::Unavailable(format!("{}: {err}", path.display())),
                _ => StoreError::Sql(err.to_string()),
            },
        },
    }
}

impl SqliteTtlStore {
    /// Open (creating if needed) the store at `path` with a 5000 ms busy
    /// timeout. See [`SqliteTtlStore::open_with_busy_timeout`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with_busy_timeout(path, DEFAULT_BUSY_TIMEOUT_MS)
    }

    /// Open (creating if needed) the store at `path`, waiting up to
    /// `busy_timeout_ms` for locks held by other connections.
    ///
    /// Errors, never panics:
    /// - [`StoreError::Open`] for a path that cannot be opened (missing or
    ///   unreadable directory, a directory) or an incompatible `calls` table;
    /// - [`StoreError::Corrupt`] for a file that is not a database (the file
    ///   is left as it is);
    /// - [`StoreError::Locked`] when another connection holds the database
    ///   locked longer than the busy timeout (open creates the schema inside
    ///   a write transaction, so it needs the write lock).
    pub fn open_with_busy_timeout(
        path: impl AsRef<Path>,
        busy_timeout_ms: u64,
    ) -> Result<Self, StoreError> {
        let path = path.as_ref();
        let conn = Connection::open(path).map_err(|e| map_error(path, Phase::Open, e))?;
        Self::init(conn, path.to_path_buf(), busy_timeout_ms)
    }

    /// A private, non-persistent store in memory (same SQL, no file).
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let path = PathBuf::from(":memory:");
        let conn = Connection::open_in_memory().map_err(|e| map_error(&path, Phase::Open, e))?;
        Self::init(conn, path, DEFAULT_BUSY_TIMEOUT_MS)
    }

    /// The path this store was opened at (`:memory:` for an in-memory store).
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn init(conn: Connection, path: PathBuf, busy_timeout_ms: u64) -> Result<Self, StoreError> {
        let err = |e| map_error(&path, Phase::Open, e);
        let busy_ms = i64::try_from(busy_timeout_ms.min(i32::MAX as u64)).unwrap_or(i64::MAX);
        conn.pragma_update(None, "busy_timeout", busy_ms)
            .map_err(err)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        // The table may predate us: make sure it has the columns we use.
        conn.prepare("SELECT call_key, storage_key, expiration FROM calls LIMIT 0")
            .map_err(|e| match err(e) {
                StoreError::Open { path, reason } => StoreError::Open {
                    path,
                    reason: format!("incompatible calls table: {reason}"),
                },
                other => other,
            })?;
        tracing::debug!(path = %path.display(), journal_mode = %mode, busy_timeout_ms, "opened TTL store");
        Ok(Self {
            conn: Mutex::new(conn),
            path,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // Nothing panics while the lock is held, but never propagate poison.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn err(&self, e: rusqlite::Error) -> StoreError {
        map_error(&self.path, Phase::Run, e)
    }
}

impl TtlStore for SqliteTtlStore {
    fn select(&self, call_key: &str) -> Result<Option<TtlRow>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(SELECT).map_err(|e| self.err(e))?;
        stmt.query_row(params![call_key], |row| {
            Ok(TtlRow {
                storage_key: row.get(0)?,
                expiration: row.get(1)?,
            })
        })
        .optional()
        .map_err(|e| self.err(e))
    }

    fn compare_and_upsert(
        &self,
        call_key: &str,
        row: &TtlRow,
        compare: Option<&str>,
    ) -> Result<bool, StoreError> {
        let conn = self.lock();
        let changed = match compare {
            None => conn
                .prepare_cached(INSERT_IF_ABSENT)
                .and_then(|mut s| s.execute(params![call_key, row.storage_key, row.expiration])),
            Some(c) => conn
                .prepare_cached(COMPARE_AND_UPSERT)
                .and_then(|mut s| s.execute(params![call_key, row.storage_key, row.expiration, c])),
        }
        .map_err(|e| self.err(e))?;
        Ok(changed > 0)
    }

    fn gc_expired(&self, now: i64, batch: usize) -> Result<usize, StoreError> {
        if batch == 0 {
            return Ok(0);
        }
        let limit = i64::try_from(batch).unwrap_or(i64::MAX);
        let conn = self.lock();
        conn.prepare_cached(GC)
            .and_then(|mut s| s.execute(params![now, limit]))
            .map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ttl::contract;

    fn row(key: &str, expiration: i64) -> TtlRow {
        TtlRow {
            storage_key: key.into(),
            expiration,
        }
    }

    /// Which error a failing SQLite call becomes: a lock and a damaged file
    /// are named as such; while running, an I/O failure (disk, permissions,
    /// a read-only file) is the store being unavailable, anything else an
    /// SQL error; while opening, everything else is an open error.
    #[test]
    fn sqlite_failures_map_to_the_errors_callers_act_on() {
        use rusqlite::ffi;
        let path = Path::new("/ttl.db");
        let err = |code| rusqlite::Error::SqliteFailure(ffi::Error::new(code), None);
        let run = |code| map_error(path, Phase::Run, err(code));
        for code in [ffi::SQLITE_BUSY, ffi::SQLITE_LOCKED] {
            assert!(matches!(run(code), StoreError::Locked { .. }), "{code}");
        }
        for code in [ffi::SQLITE_NOTADB, ffi::SQLITE_CORRUPT] {
            assert!(matches!(run(code), StoreError::Corrupt { .. }), "{code}");
        }
        for code in [
            ffi::SQLITE_IOERR,
            ffi::SQLITE_FULL,
            ffi::SQLITE_CANTOPEN,
            ffi::SQLITE_PERM,
            ffi::SQLITE_READONLY,
        ] {
            let e = run(code);
            assert!(matches!(e, StoreError::Unavailable(_)), "{code}: {e}");
            assert!(e.to_string().contains("/ttl.db"), "{e}");
        }
        assert!(matches!(run(ffi::SQLITE_CONSTRAINT), StoreError::Sql(_)));
        let open = map_error(path, Phase::Open, err(ffi::SQLITE_IOERR));
        assert!(matches!(open, StoreError::Open { .. }), "{open}");
        let locked = map_error(path, Phase::Open, err(ffi::SQLITE_BUSY));
        assert!(matches!(locked, StoreError::Locked { .. }), "{locked}");
    }

    #[test]
    fn t1_rows_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ttl.db");
        {
            let store = SqliteTtlStore::open(&path).unwrap();
            assert_eq!(store.path(), path.as_path());
            assert!(store.compare_and_upsert("a", &row("ka", 10), None).unwrap());
            assert!(store
                .compare_and_upsert("b", &row("kb", i64::MAX), None)
                .unwrap());
            assert!(store
                .compare_and_upsert("a", &row("ka2", 20), Some("ka"))
                .unwrap());
        }
        let store = SqliteTtlStore::open(&path).unwrap();
        assert_eq!(store.select("a").unwrap(), Some(row("ka2", 20)));
        assert_eq!(store.select("b").unwrap(), Some(row("kb", i64::MAX)));
        assert_eq!(store.select("c").unwrap(), None);
    }

    #[test]
    fn t1_schema_and_pragmas() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ttl.db");
        let store = SqliteTtlStore::open(&path).unwrap();
        let probe = Connection::open(&path).unwrap();
        let mode: String = probe
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let index: String = probe
            .query_row(
                "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = 'calls_expiration'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(index.contains("expiration"), "{index}");
        let conn = store.lock();
        let sync: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 1, "synchronous=NORMAL");
        let busy: i64 = conn
            .query_row("PRAGMA busy_timeout", [], |r| r.get(0))
            .unwrap();
        assert_eq!(busy, 5000);
    }

    #[test]
    fn t1_open_missing_directory_is_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-dir").join("ttl.db");
        match SqliteTtlStore::open(&path) {
            Err(StoreError::Open { path: p, reason }) => {
                assert_eq!(p, path);
                assert!(!reason.is_empty());
                let msg = StoreError::Open { path: p, reason }.to_string();
                assert!(msg.contains("no-such-dir"), "{msg}");
            }
            other => panic!("expected Open error, got {other:?}"),
        }
        assert!(!path.exists());
    }

    #[test]
    fn t1_open_directory_path_is_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        match SqliteTtlStore::open(dir.path()) {
            Err(StoreError::Open { path, .. }) => assert_eq!(path, dir.path()),
            other => panic!("expected Open error, got {other:?}"),
        }
    }

    #[test]
    fn t1_open_garbage_file_is_corrupt_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ttl.db");
        let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
        std::fs::write(&path, &garbage).unwrap();
        match SqliteTtlStore::open(&path) {
            Err(e @ StoreError::Corrupt { .. }) => {
                let StoreError::Corrupt { path: p, .. } = &e else {
                    unreachable!()
                };
                assert_eq!(p, &path);
                assert!(e.to_string().contains("ttl.db"), "{e}");
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        // Never deleted or rewritten.
        assert_eq!(std::fs::read(&path).unwrap(), garbage);
    }

    #[test]
    fn t1_open_locked_database_reports_locked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ttl.db");
        let locker = Connection::open(&path).unwrap();
        locker
            .execute_batch("CREATE TABLE other(x); BEGIN EXCLUSIVE; INSERT INTO other VALUES (1);")
            .unwrap();
        match SqliteTtlStore::open_with_busy_timeout(&path, 50) {
            Err(StoreError::Locked { path: p }) => assert_eq!(p, path),
            other => panic!("expected Locked, got {other:?}"),
        }
        locker.execute_batch("COMMIT").unwrap();
        let store = SqliteTtlStore::open_with_busy_timeout(&path, 50).unwrap();
        assert_eq!(store.select("a").unwrap(), None);
    }

    #[test]
    fn t1_open_locked_wal_database_reports_locked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ttl.db");
        {
            let store = SqliteTtlStore::open(&path).unwrap();
            assert!(store.compare_and_upsert("a", &row("ka", 10), None).unwrap());
        }
        let locker = Connection::open(&path).unwrap();
        locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
        match SqliteTtlStore::open_with_busy_timeout(&path, 50) {
            Err(StoreError::Locked { path: p }) => assert_eq!(p, path),
            other => panic!("expected Locked, got {other:?}"),
        }
        // An open store meeting the lock later reports Locked for writes.
        locker.execute_batch("COMMIT").unwrap();
        let store = SqliteTtlStore::open_with_busy_timeout(&path, 50).unwrap();
        locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
        assert_eq!(
            store.compare_and_upsert("b", &row("kb", 10), None),
            Err(StoreError::Locked { path: path.clone() })
        );
        locker.execute_batch("COMMIT").unwrap();
        assert!(store.compare_and_upsert("b", &row("kb", 10), None).unwrap());
        assert_eq!(store.select("a").unwrap(), Some(row("ka", 10)));
    }

    #[test]
    fn t1_open_incompatible_table_is_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ttl.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE calls(something_else TEXT)")
            .unwrap();
        match SqliteTtlStore::open(&path) {
            Err(StoreError::Open { reason, .. }) => assert!(reason.contains("calls"), "{reason}"),
            other => panic!("expected Open error, got {other:?}"),
        }
    }

    #[test]
    fn t4_two_connections_one_winner() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ttl.db");
        let a = SqliteTtlStore::open(&path).unwrap();
        let b = SqliteTtlStore::open(&path).unwrap();
        // Same check as the contract suite, through two connections.
        contract::compare_and_upsert_has_one_winner(&a, &b).unwrap();

        // And with real threads racing on each round.
        for round in 0..40 {
            let call_key = format!("thread-race-{round}");
            let compare = if round % 2 == 0 {
                None
            } else {
                assert!(a
                    .compare_and_upsert(&call_key, &row("expired", 1), None)
                    .unwrap());
                Some("expired")
            };
            let barrier = std::sync::Barrier::new(2);
            let (wa, wb) = (
                row(&format!("a-{round}"), 100),
                row(&format!("b-{round}"), 200),
            );
            let (ra, rb) = std::thread::scope(|s| {
                let ha = s.spawn(|| {
                    barrier.wait();
                    a.compare_and_upsert(&call_key, &wa, compare).unwrap()
                });
                let hb = s.spawn(|| {
                    barrier.wait();
                    b.compare_and_upsert(&call_key, &wb, compare).unwrap()
                });
                (ha.join().unwrap(), hb.join().unwrap())
            });
            assert!(ra ^ rb, "round {round}: exactly one winner ({ra}, {rb})");
            let stored = a.select(&call_key).unwrap().unwrap();
            assert_eq!(stored, if ra { wa } else { wb });
            assert_eq!(b.select(&call_key).unwrap().unwrap(), stored);
        }
    }
}
