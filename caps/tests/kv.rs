//! The key-value store on a real redb file in a temporary directory: set, get, delete, prefix
//! lists, quotas, persistence across reopening, concurrent writers of one key, and a writer
//! process killed with SIGKILL in the middle of its writes (HOSTILE-REQUESTS.md rows 18, 19).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use glint_caps::kv::{KvDatabase, Store, StoreUsage};
use glint_caps::{
    CapsConfig, CapsContext, CapsError, CapsErrorKind, FunctionCaps, Grants, Quota, StoreConfig, Variables,
};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;

fn open(dir: &std::path::Path, quota: u64) -> Store {
    KvDatabase::open_in(dir).unwrap().store("default", quota).unwrap()
}

fn assert_consistent(store: &Store) -> StoreUsage {
    let usage = store.usage().unwrap();
    let counted = store.recount().unwrap();
    assert_eq!((usage.bytes, usage.keys), (counted.bytes, counted.keys), "usage record disagrees with the data");
    usage
}

#[test]
fn set_get_delete_and_prefix_lists() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 1 << 20);
    assert_eq!(store.get("a").unwrap(), None);
    store.set("a", b"1").unwrap();
    store.set("a", b"two").unwrap();
    assert_eq!(store.get("a").unwrap().as_deref(), Some(&b"two"[..]));
    store.set("empty", b"").unwrap();
    assert_eq!(store.get("empty").unwrap().as_deref(), Some(&b""[..]), "an empty value is not an absent one");
    for k in ["user/2", "user/1", "user/10", "users", "v"] {
        store.set(k, k.as_bytes()).unwrap();
    }
    let (keys, more) = store.list("user/", "", 0).unwrap();
    assert_eq!((keys, more), (vec!["user/1".to_owned(), "user/10".into(), "user/2".into()], false));
    // Pages: two at a time, continuing after the last key.
    let (page, more) = store.list("user", "", 2).unwrap();
    assert_eq!((page.clone(), more), (vec!["user/1".to_owned(), "user/10".into()], true));
    let (page, more) = store.list("user", page.last().unwrap(), 2).unwrap();
    assert_eq!((page, more), (vec!["user/2".to_owned(), "users".into()], false));
    assert_eq!(store.list("", "", 0).unwrap().0.len(), 7);
    assert_eq!(store.list("zzz", "", 0).unwrap(), (vec![], false));
    assert!(store.delete("a").unwrap());
    assert!(!store.delete("a").unwrap());
    assert_eq!(store.get("a").unwrap(), None);
    let usage = assert_consistent(&store);
    assert_eq!(usage.keys, 6);
    // Keys are checked.
    assert_eq!(store.set("", b"x").unwrap_err().kind(), CapsErrorKind::Invalid);
    assert_eq!(store.get(&"k".repeat(2000)).unwrap_err().kind(), CapsErrorKind::Invalid);
}

#[test]
fn stores_are_separate_namespaces() {
    let dir = tempfile::tempdir().unwrap();
    let db = KvDatabase::open_in(dir.path()).unwrap();
    let a = db.store("a", 1000).unwrap();
    let b = db.store("b", 1000).unwrap();
    a.set("k", b"from a").unwrap();
    assert_eq!(b.get("k").unwrap(), None);
    assert_eq!(b.list("", "", 0).unwrap().0.len(), 0);
    b.set("k", b"from b").unwrap();
    assert_eq!(a.get("k").unwrap().as_deref(), Some(&b"from a"[..]));
    assert_eq!(a.usage().unwrap().bytes, 7);
    assert!(db.store("no/slash", 1).is_err());
}

#[test]
fn the_quota_refuses_growth_and_keeps_the_store_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 100);
    store.set("k", &[1; 90]).unwrap(); // 91 bytes
    let e = store.set("k2", &[2; 10]).unwrap_err(); // would be 103
    match &e {
        CapsError::QuotaExceeded { quota: Quota::KvBytes { store }, limit: 100, needed: Some(103) } => {
            assert_eq!(store, "default")
        }
        other => panic!("{other}"),
    }
    assert_eq!(
        e.to_string(),
        "quota_exceeded: key-value bytes of store \"default\" is limited to 100 (this call needs 103)"
    );
    assert_eq!(store.get("k2").unwrap(), None, "a refused write leaves nothing behind");
    assert_eq!(assert_consistent(&store).bytes, 91);
    // Replacing a value counts the difference: shrinking and growing within the quota work.
    store.set("k", &[1; 99]).unwrap(); // exactly 100
    assert!(store.set("k", &[1; 100]).is_err());
    store.set("k", &[1; 10]).unwrap();
    store.set("k2", &[2; 10]).unwrap();
    // Deleting frees space.
    assert!(store.delete("k").unwrap());
    assert_eq!(assert_consistent(&store).bytes, 12);
    // A lowered quota still allows writes that do not grow the store.
    drop(store);
    let small = open(dir.path(), 5);
    small.set("k2", &[3; 5]).unwrap();
    assert!(small.set("k3", b"x").is_err());
}

#[test]
fn data_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path(), 1 << 20);
        for i in 0..100 {
            store.set(&format!("k{i:03}"), format!("value {i}").as_bytes()).unwrap();
        }
        store.delete("k050").unwrap();
    }
    let store = open(dir.path(), 1 << 20);
    assert_eq!(store.get("k007").unwrap().as_deref(), Some(&b"value 7"[..]));
    assert_eq!(store.get("k050").unwrap(), None);
    assert_eq!(store.list("k", "", 0).unwrap().0.len(), 99);
    assert_eq!(assert_consistent(&store).seq, 101);
}

#[test]
fn a_database_in_use_cannot_be_opened_again() {
    let dir = tempfile::tempdir().unwrap();
    let _first = KvDatabase::open_in(dir.path()).unwrap();
    let e = KvDatabase::open_in(dir.path()).unwrap_err();
    assert!(matches!(e, CapsError::OpenDatabase { .. }), "{e}");
    assert_eq!(e.kind(), CapsErrorKind::Config);
}

#[test]
fn concurrent_writers_of_one_key_have_a_defined_winner() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path(), 1 << 20));
    let threads = 8;
    let writes = 25;
    let results: Vec<Vec<(u64, Vec<u8>)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let store = Arc::clone(&store);
                s.spawn(move || {
                    (0..writes)
                        .map(|i| {
                            // Different lengths, so a torn write would show in the usage record.
                            let value = format!("thread {t} write {i} {}", "x".repeat(t * 7 + i)).into_bytes();
                            (store.set("contended", &value).unwrap(), value)
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let all: BTreeMap<u64, Vec<u8>> = results.into_iter().flatten().collect();
    assert_eq!(all.len(), threads * writes, "every commit has its own sequence number");
    assert_eq!(*all.keys().next().unwrap(), 1);
    assert_eq!(*all.keys().last().unwrap(), (threads * writes) as u64, "no gaps: writes are serialised");
    let (_, winner) = all.iter().next_back().unwrap();
    assert_eq!(store.get("contended").unwrap().as_ref(), Some(winner), "the last commit wins");
    let usage = assert_consistent(&store);
    assert_eq!((usage.keys, usage.bytes), (1, ("contended".len() + winner.len()) as u64));
}

#[test]
fn function_caps_check_the_grant_and_use_the_configured_quota() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = CapsConfig::default();
    config.kv_stores.insert("small".into(), StoreConfig { quota_bytes: 10 });
    let ctx = CapsContext::new(&config, Some(dir.path())).unwrap();
    let grants = Grants { key_value_stores: vec!["small".into(), "big".into()], ..Grants::default() };
    let caps = FunctionCaps::new("f", &grants, &Variables::new(), &ctx).unwrap();
    assert_eq!(caps.store("small").unwrap().quota(), 10);
    assert_eq!(caps.store("big").unwrap().quota(), glint_caps::DEFAULT_KV_QUOTA_BYTES);
    assert!(caps.kv_set("small", "k", &[0; 20]).unwrap_err().kind() == CapsErrorKind::QuotaExceeded);
    caps.kv_set("big", "k", &[0; 20]).unwrap();
    let e = caps.kv_get("other", "k").unwrap_err();
    assert!(matches!(&e, CapsError::UnknownStore { store } if store == "other"), "{e}");
    // A second function shares the database (opened once) and sees the data.
    let other = FunctionCaps::new("g", &grants, &Variables::new(), &ctx).unwrap();
    assert_eq!(other.kv_get("big", "k").unwrap().unwrap().len(), 20);
}

/// The environment variable that turns [`sigkill_child_writer`] into the child writer.
const CHILD_DIR: &str = "GLINT_CAPS_KV_CHILD_DIR";
/// The child's quota: large enough never to refuse, so every write commits.
const CHILD_QUOTA: u64 = 1 << 30;

fn child_value(i: u64) -> Vec<u8> {
    let len = (i * 97 % 4000 + 1) as usize;
    (0..len).map(|j| (i as usize + j) as u8).collect()
}

/// Not a test on its own: run as a child process by
/// `a_writer_killed_mid_write_leaves_a_consistent_store`. It writes until killed, continuing
/// from the `next` counter in the store, and prints each write's sequence number once committed.
#[test]
#[ignore = "helper: run by the SIGKILL test as a child process"]
fn sigkill_child_writer() {
    use std::io::Write;
    let dir = std::env::var(CHILD_DIR).expect("run by the SIGKILL test");
    let store = open(std::path::Path::new(&dir), CHILD_QUOTA);
    let start = store.get("next").unwrap().map_or(0, |v| String::from_utf8(v).unwrap().parse::<u64>().unwrap());
    let mut out = std::io::stdout().lock();
    for i in start.. {
        let seq = store.set(&format!("k/{i:08}"), &child_value(i)).unwrap();
        if i % 5 == 4 {
            store.delete(&format!("k/{:08}", i - 2)).unwrap();
        }
        let seq = seq.max(store.set("next", format!("{}", i + 1).as_bytes()).unwrap());
        writeln!(out, "{seq}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn a_writer_killed_mid_write_leaves_a_consistent_store() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    for round in 0..3 {
        let mut child = Command::new(&exe)
            .args(["--ignored", "--exact", "sigkill_child_writer", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut acknowledged = 0u64;
        let mut seen = 0;
        // Sequence numbers are the only lines the child prints that parse; the test harness's
        // own lines do not.
        while seen < 40 {
            let line = lines.next().expect("the child writer stopped early").unwrap();
            if let Ok(seq) = line.trim().parse::<u64>() {
                acknowledged = seq;
                seen += 1;
            }
        }
        // SIGKILL while it keeps writing (Child::kill sends SIGKILL on Unix).
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success(), "round {round}: the child was killed");

        let store = open(dir.path(), CHILD_QUOTA);
        let usage = assert_consistent(&store);
        assert!(usage.seq >= acknowledged, "round {round}: commit {acknowledged} was acknowledged but lost");
        let next = String::from_utf8(store.get("next").unwrap().unwrap()).unwrap().parse::<u64>().unwrap();
        let (keys, _) = store.list("k/", "", 0).unwrap();
        let mut pages = keys.clone();
        let mut more = true;
        while more {
            let (page, m) = store.list("k/", pages.last().unwrap(), 0).unwrap();
            more = m;
            pages.extend(page);
        }
        for key in &pages {
            let i: u64 = key.trim_start_matches("k/").parse().unwrap();
            assert_eq!(store.get(key).unwrap().unwrap(), child_value(i), "round {round}: {key} holds a torn value");
            assert!(i <= next, "round {round}: {key} written after `next` = {next}");
        }
        // Every write before `next` that was not deleted is there. Key i (i % 5 == 2) is deleted
        // by iteration i + 2, after its own write and before `next` moves past i + 2: when
        // `next` is i + 2 the kill may have come before or after the delete.
        for i in 0..next {
            let present = store.get(&format!("k/{i:08}")).unwrap().is_some();
            match (i % 5 == 2, i + 2) {
                (true, d) if d < next => assert!(!present, "round {round}: k/{i:08} was deleted"),
                (true, d) if d == next => {}
                _ => assert!(present, "round {round}: k/{i:08} was written"),
            }
        }
        assert!(next >= 40 * (round + 1), "round {round}: only {next} writes");
    }
}
