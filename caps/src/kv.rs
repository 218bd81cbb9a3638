//! The key-value store: one redb database file per server, one table per store.
//!
//! Every write is one redb write transaction that updates the store's table and its usage
//! record (bytes, keys, a commit sequence number) together, committed with
//! `Durability::Immediate` (fsync before `commit` returns). redb runs one write transaction at a
//! time, so concurrent writers of a key are serialised and the last to commit wins; its
//! copy-on-write B-trees and checksummed commit slots mean a crash (SIGKILL, power loss) leaves
//! the database at its last committed transaction, usage records included. Reads run on MVCC
//! snapshots and never wait for a writer.

use crate::error::{CapsError, Quota};
use glint_abi::caps::{MAX_KEY_LEN, MAX_LIST_KEYS};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableError};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The usage record of every store: name → (bytes, keys, commit sequence).
const USAGE: TableDefinition<&str, (u64, u64, u64)> = TableDefinition::new("glint:kv-usage");

/// File name of the database inside the data directory.
pub const DATABASE_FILE: &str = "kv.redb";

/// The key-value database of a server: one file, opened once, shared by every store.
pub struct KvDatabase {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for KvDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvDatabase").field("path", &self.path).finish_non_exhaustive()
    }
}

/// What a store holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreUsage {
    /// Bytes of keys and values, the quantity the quota bounds.
    pub bytes: u64,
    /// Number of keys.
    pub keys: u64,
    /// Writes committed so far (sets and deletes that changed something).
    pub seq: u64,
}

impl KvDatabase {
    /// Opens (or creates) the database `kv.redb` in `data_dir`, creating the directory.
    ///
    /// # Errors
    /// The directory cannot be created; the file is open in another process, corrupt, or of a
    /// newer format.
    pub fn open_in(data_dir: &Path) -> Result<Arc<KvDatabase>, CapsError> {
        std::fs::create_dir_all(data_dir).map_err(|source| CapsError::DataDir { path: data_dir.to_owned(), source })?;
        Self::open(&data_dir.join(DATABASE_FILE))
    }

    /// Opens (or creates) the database file at `path`. After a crash, redb checks the file and
    /// repairs its allocator state from the last committed transaction before this returns.
    ///
    /// # Errors
    /// The file is open in another process, corrupt, or of a newer format.
    pub fn open(path: &Path) -> Result<Arc<KvDatabase>, CapsError> {
        let db = Database::create(path)
            .map_err(|source| CapsError::OpenDatabase { path: path.to_owned(), source: Box::new(source) })?;
        Ok(Arc::new(KvDatabase { db, path: path.to_owned() }))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A handle on store `name` with byte quota `quota`.
    ///
    /// # Errors
    /// A name that is not `[A-Za-z0-9_.-]{1,64}`.
    pub fn store(self: &Arc<Self>, name: &str, quota: u64) -> Result<Store, CapsError> {
        if !glint_abi::caps::is_store_name(name) {
            return Err(CapsError::grant(
                format!("key_value_stores ({name:?})"),
                "a store name is 1 to 64 characters of A-Z a-z 0-9 _ . -",
            ));
        }
        Ok(Store { db: Arc::clone(self), name: name.to_owned(), table: format!("kv:{name}"), quota })
    }
}

/// One store: a namespace of keys in the database, with a byte quota.
#[derive(Clone)]
pub struct Store {
    db: Arc<KvDatabase>,
    name: String,
    table: String,
    quota: u64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("name", &self.name).field("quota", &self.quota).finish_non_exhaustive()
    }
}

fn check_key(key: &str) -> Result<(), CapsError> {
    if key.is_empty() {
        return Err(CapsError::invalid("key", "keys are not empty"));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(CapsError::invalid("key", format!("key of {} bytes exceeds {MAX_KEY_LEN}", key.len())));
    }
    Ok(())
}

fn entry_bytes(key: &str, value_len: usize) -> u64 {
    (key.len() as u64).saturating_add(value_len as u64)
}

impl Store {
    /// The store's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its byte quota.
    pub fn quota(&self) -> u64 {
        self.quota
    }

    fn table(&self) -> TableDefinition<'_, &'static str, &'static [u8]> {
        TableDefinition::new(&self.table)
    }

    fn err(&self, e: impl Into<redb::Error>) -> CapsError {
        CapsError::storage(&self.name, e)
    }

    /// The value under `key`.
    ///
    /// # Errors
    /// An empty or over-long key; the database failed.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CapsError> {
        check_key(key)?;
        let txn = self.db.db.begin_read().map_err(|e| self.err(e))?;
        let table = match txn.open_table(self.table()) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(self.err(e)),
        };
        let value = table.get(key).map_err(|e| self.err(e))?.map(|v| v.value().to_vec());
        Ok(value)
    }

    /// Stores `value` under `key`; returns the commit's sequence number (writes to one store are
    /// totally ordered by it: of concurrent writers, the one with the highest number won).
    ///
    /// # Errors
    /// An empty or over-long key; the store would grow past its quota (nothing is written; a
    /// write that does not grow the store is allowed even above a lowered quota); the database
    /// failed.
    pub fn set(&self, key: &str, value: &[u8]) -> Result<u64, CapsError> {
        check_key(key)?;
        let txn = self.db.db.begin_write().map_err(|e| self.err(e))?;
        let seq = {
            let mut usage_table = txn.open_table(USAGE).map_err(|e| self.err(e))?;
            let usage = read_usage(&usage_table, &self.name).map_err(|e| self.err(e))?;
            let mut table = txn.open_table(self.table()).map_err(|e| self.err(e))?;
            let old = table.get(key).map_err(|e| self.err(e))?.map(|v| v.value().len());
            let bytes = usage
                .bytes
                .saturating_sub(old.map_or(0, |len| entry_bytes(key, len)))
                .saturating_add(entry_bytes(key, value.len()));
            if bytes > self.quota && bytes > usage.bytes {
                return Err(CapsError::QuotaExceeded {
                    quota: Quota::KvBytes { store: self.name.clone() },
                    limit: self.quota,
                    needed: Some(bytes),
                });
            }
            table.insert(key, value).map_err(|e| self.err(e))?;
            let keys = usage.keys.saturating_add(u64::from(old.is_none()));
            let seq = usage.seq.saturating_add(1);
            usage_table.insert(self.name.as_str(), (bytes, keys, seq)).map_err(|e| self.err(e))?;
            seq
        };
        // Dropping `txn` without commit (the quota error above) aborts it.
        txn.commit().map_err(|e| self.err(e))?;
        Ok(seq)
    }

    /// Removes `key`; whether it existed.
    ///
    /// # Errors
    /// An empty or over-long key; the database failed.
    pub fn delete(&self, key: &str) -> Result<bool, CapsError> {
        check_key(key)?;
        let txn = self.db.db.begin_write().map_err(|e| self.err(e))?;
        let existed = {
            let mut table = txn.open_table(self.table()).map_err(|e| self.err(e))?;
            let old = table.remove(key).map_err(|e| self.err(e))?.map(|v| v.value().len());
            if let Some(len) = old {
                let mut usage_table = txn.open_table(USAGE).map_err(|e| self.err(e))?;
                let usage = read_usage(&usage_table, &self.name).map_err(|e| self.err(e))?;
                let record = (
                    usage.bytes.saturating_sub(entry_bytes(key, len)),
                    usage.keys.saturating_sub(1),
                    usage.seq.saturating_add(1),
                );
                usage_table.insert(self.name.as_str(), record).map_err(|e| self.err(e))?;
            }
            old.is_some()
        };
        if existed {
            txn.commit().map_err(|e| self.err(e))?;
        } else {
            txn.abort().map_err(|e| self.err(e))?;
        }
        Ok(existed)
    }

    /// Up to `max` keys (0 or more than [`MAX_LIST_KEYS`] mean [`MAX_LIST_KEYS`]) that start
    /// with `prefix` and sort after `after`, ascending; and whether more follow.
    ///
    /// # Errors
    /// The database failed.
    pub fn list(&self, prefix: &str, after: &str, max: u32) -> Result<(Vec<String>, bool), CapsError> {
        let max = if max == 0 || max > MAX_LIST_KEYS { MAX_LIST_KEYS } else { max };
        let max = usize::try_from(max).unwrap_or(usize::MAX);
        let txn = self.db.db.begin_read().map_err(|e| self.err(e))?;
        let table = match txn.open_table(self.table()) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok((Vec::new(), false)),
            Err(e) => return Err(self.err(e)),
        };
        let start = if after > prefix { after } else { prefix };
        let mut keys = Vec::new();
        for entry in table.range::<&str>(start..).map_err(|e| self.err(e))? {
            let (key, _) = entry.map_err(|e| self.err(e))?;
            let key = key.value();
            if key == after {
                continue;
            }
            if !key.starts_with(prefix) {
                break;
            }
            if keys.len() == max {
                return Ok((keys, true));
            }
            keys.push(key.to_owned());
        }
        Ok((keys, false))
    }

    /// What the store holds, as its usage record says.
    ///
    /// # Errors
    /// The database failed.
    pub fn usage(&self) -> Result<StoreUsage, CapsError> {
        let txn = self.db.db.begin_read().map_err(|e| self.err(e))?;
        match txn.open_table(USAGE) {
            Ok(t) => read_usage(&t, &self.name).map_err(|e| self.err(e)),
            Err(TableError::TableDoesNotExist(_)) => Ok(StoreUsage::default()),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Recounts the store's keys and bytes from its entries (for consistency checks); the
    /// result equals [`Store::usage`] in bytes and keys when the database is consistent.
    ///
    /// # Errors
    /// The database failed.
    pub fn recount(&self) -> Result<StoreUsage, CapsError> {
        let txn = self.db.db.begin_read().map_err(|e| self.err(e))?;
        let table = match txn.open_table(self.table()) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(StoreUsage::default()),
            Err(e) => return Err(self.err(e)),
        };
        let mut usage = StoreUsage::default();
        for entry in table.iter().map_err(|e| self.err(e))? {
            let (k, v) = entry.map_err(|e| self.err(e))?;
            usage.bytes = usage.bytes.saturating_add(entry_bytes(k.value(), v.value().len()));
            usage.keys = usage.keys.saturating_add(1);
        }
        Ok(usage)
    }
}

fn read_usage(
    table: &impl ReadableTable<&'static str, (u64, u64, u64)>,
    store: &str,
) -> Result<StoreUsage, redb::Error> {
    Ok(table
        .get(store)?
        .map(|v| {
            let (bytes, keys, seq) = v.value();
            StoreUsage { bytes, keys, seq }
        })
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked() {
        assert!(check_key("").is_err());
        assert!(check_key(&"k".repeat(MAX_KEY_LEN)).is_ok());
        let long = check_key(&"k".repeat(MAX_KEY_LEN + 1)).unwrap_err();
        assert_eq!(long.kind(), crate::CapsErrorKind::Invalid);
    }
}
