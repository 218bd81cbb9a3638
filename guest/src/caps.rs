//! Typed wrappers over the standard capabilities (`docs/CAPABILITIES.md`).
//!
//! Each function is a host call to one `glint:<capability>/<fn>@<version>` host function (names
//! in `glint_abi::caps`). Declare the capabilities a guest uses with
//! [`capabilities!`](crate::capabilities) (`glint_guest::capabilities!(kv, clock);`), so the host
//! checks them before the first call. A capability the embedder or the manifest did not grant is not
//! registered, so its calls fail with [`HostCallError`] code `NOT_FOUND`. A capability that
//! refuses a call (a host outside the allow-list, a quota) fails with code `FAILED` and a message
//! `<kind>: <detail>`; [`ErrorKind::of`] reads the kind.
//!
//! ```ignore
//! use glint_guest::caps::{clock, kv, variables};
//! let greeting = variables::get("greeting")?;
//! let visits = kv::get("default", "visits")?.map_or(0, |v| v.len());
//! kv::set("default", "visits", &[0; 1])?;
//! let now_ns = clock::wall_ns()?;
//! ```

use crate::host::HostCallError;
use alloc::string::String;
use alloc::vec::Vec;
use glint_abi::caps as abi;
use glint_abi::code::HostCallError as Code;

/// What kind of refusal a capability reported (the `<kind>:` prefix of its message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Not allowed by the grant: e.g. a host outside `allowed_outbound_hosts`.
    Denied,
    /// A quota was reached: a store's bytes, outbound requests per request.
    QuotaExceeded,
    /// An outbound request took longer than its timeout.
    Timeout,
    /// A response or value above its size limit.
    TooLarge,
    /// A store that was not granted.
    UnknownStore,
    /// A variable that was not granted.
    UnknownVariable,
    /// An argument the capability refuses: a key too long, a malformed request, a bad URL.
    Invalid,
    /// The host could not do it now: the database or the remote end failed.
    Unavailable,
    /// Another failure.
    Failed,
}

impl ErrorKind {
    const ALL: [(&'static str, ErrorKind); 9] = [
        ("denied", ErrorKind::Denied),
        ("quota_exceeded", ErrorKind::QuotaExceeded),
        ("timeout", ErrorKind::Timeout),
        ("too_large", ErrorKind::TooLarge),
        ("unknown_store", ErrorKind::UnknownStore),
        ("unknown_variable", ErrorKind::UnknownVariable),
        ("invalid", ErrorKind::Invalid),
        ("unavailable", ErrorKind::Unavailable),
        ("failed", ErrorKind::Failed),
    ];

    /// The kind of a capability's refusal; `None` for other host-call failures (not registered,
    /// bad arguments, or a failure detected in the guest).
    pub fn of(error: &HostCallError) -> Option<ErrorKind> {
        if error.code != Code::Failed.number() {
            return None;
        }
        let (prefix, _) = error.message.split_once(": ")?;
        Self::ALL.iter().find(|(name, _)| *name == prefix).map(|&(_, kind)| kind)
    }

    /// The stable name, as it appears in the message.
    pub fn as_str(self) -> &'static str {
        Self::ALL.iter().find(|(_, k)| *k == self).map_or("failed", |(name, _)| name)
    }
}

fn local(message: String) -> HostCallError {
    HostCallError { code: HostCallError::LOCAL, message }
}

fn decode_option(bytes: Vec<u8>) -> Result<Option<Vec<u8>>, HostCallError> {
    match abi::read_option(&bytes) {
        Ok(v) => Ok(v.map(<[u8]>::to_vec)),
        Err(e) => Err(local(alloc::format!("bad optional value from the host: {e}"))),
    }
}

fn decode_page(bytes: &[u8]) -> Result<(Vec<String>, bool), HostCallError> {
    let page = abi::read_key_page(bytes).map_err(|e| local(alloc::format!("bad key page from the host: {e}")))?;
    let more = page.more;
    Ok((page.map(String::from).collect(), more))
}

/// Wall-clock and monotonic time.
pub mod clock {
    #[allow(unused_imports, reason = "used on the bare-metal target")]
    use super::*;

    /// Nanoseconds since the Unix epoch (`glint:clock/wall@1`).
    ///
    /// # Errors
    /// The capability is not granted.
    #[cfg(target_os = "none")]
    pub fn wall_ns() -> Result<u64, HostCallError> {
        crate::host::call(abi::CLOCK_WALL, ())
    }

    /// Nanoseconds since an arbitrary origin fixed for the host process; never decreases
    /// (`glint:clock/monotonic@1`). Only differences are meaningful.
    ///
    /// # Errors
    /// The capability is not granted.
    #[cfg(target_os = "none")]
    pub fn monotonic_ns() -> Result<u64, HostCallError> {
        crate::host::call(abi::CLOCK_MONOTONIC, ())
    }
}

/// Random bytes from the host operating system.
pub mod random {
    #[allow(unused_imports, reason = "used on the bare-metal target")]
    use super::*;

    /// `n` random bytes, `n <= glint_abi::caps::MAX_RANDOM_BYTES` (`glint:random/bytes@1`).
    ///
    /// # Errors
    /// The capability is not granted, or `n` is above the limit (`invalid`).
    #[cfg(target_os = "none")]
    pub fn bytes(n: u32) -> Result<Vec<u8>, HostCallError> {
        crate::host::call(abi::RANDOM_BYTES, (n,))
    }

    /// Fills `buf` with random bytes, in as many calls as its length needs.
    ///
    /// # Errors
    /// As [`bytes`]; `buf` may then be partly filled.
    #[cfg(target_os = "none")]
    pub fn fill(buf: &mut [u8]) -> Result<(), HostCallError> {
        for chunk in buf.chunks_mut(abi::MAX_RANDOM_BYTES as usize) {
            let got = bytes(chunk.len() as u32)?;
            if got.len() != chunk.len() {
                return Err(local(alloc::format!("asked {} random bytes, got {}", chunk.len(), got.len())));
            }
            chunk.copy_from_slice(&got);
        }
        Ok(())
    }

    /// A random `u64`.
    ///
    /// # Errors
    /// As [`bytes`].
    #[cfg(target_os = "none")]
    pub fn u64() -> Result<u64, HostCallError> {
        let mut b = [0u8; 8];
        fill(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
}

/// Variables from the manifest (or the embedder); secret ones too.
pub mod variables {
    #[allow(unused_imports, reason = "used on the bare-metal target")]
    use super::*;

    /// The value of variable `name` (`glint:variables/get@1`).
    ///
    /// # Errors
    /// No variable is granted (`NOT_FOUND`), or this one is not (`unknown_variable`).
    #[cfg(target_os = "none")]
    pub fn get(name: &str) -> Result<String, HostCallError> {
        crate::host::call(abi::VARIABLES_GET, (name,))
    }
}

/// The key-value store: byte values under UTF-8 keys, in named stores the grant lists.
pub mod kv {
    #[allow(unused_imports, reason = "used on the bare-metal target")]
    use super::*;

    /// The value under `key`, or `None` (`glint:kv/get@1`).
    ///
    /// # Errors
    /// The store is not granted (`unknown_store`), the key is too long (`invalid`), the database
    /// failed (`unavailable`).
    #[cfg(target_os = "none")]
    pub fn get(store: &str, key: &str) -> Result<Option<Vec<u8>>, HostCallError> {
        decode_option(crate::host::call(abi::KV_GET, (store, key))?)
    }

    /// Stores `value` under `key`, replacing what was there (`glint:kv/set@1`). Concurrent
    /// writers of one key: the last to commit wins.
    ///
    /// # Errors
    /// As [`get`], and `quota_exceeded` when the store would grow past its byte quota.
    #[cfg(target_os = "none")]
    pub fn set(store: &str, key: &str, value: &[u8]) -> Result<(), HostCallError> {
        crate::host::call(abi::KV_SET, (store, key, value))
    }

    /// Removes `key`; whether it existed (`glint:kv/delete@1`).
    ///
    /// # Errors
    /// As [`get`].
    #[cfg(target_os = "none")]
    pub fn delete(store: &str, key: &str) -> Result<bool, HostCallError> {
        crate::host::call(abi::KV_DELETE, (store, key))
    }

    /// Up to `max` keys starting with `prefix` and greater than `after` ("" for the first page),
    /// in ascending byte order, and whether more follow (`glint:kv/list@1`).
    ///
    /// # Errors
    /// As [`get`].
    #[cfg(target_os = "none")]
    pub fn list_page(store: &str, prefix: &str, after: &str, max: u32) -> Result<(Vec<String>, bool), HostCallError> {
        let bytes: Vec<u8> = crate::host::call(abi::KV_LIST, (store, prefix, after, max))?;
        decode_page(&bytes)
    }

    /// Every key starting with `prefix`, in ascending byte order (as many pages as it takes).
    ///
    /// # Errors
    /// As [`get`].
    #[cfg(target_os = "none")]
    pub fn list(store: &str, prefix: &str) -> Result<Vec<String>, HostCallError> {
        let mut keys: Vec<String> = Vec::new();
        loop {
            let after = keys.last().map_or("", String::as_str);
            let (page, more) = list_page(store, prefix, after, abi::MAX_LIST_KEYS)?;
            let empty = page.is_empty();
            keys.extend(page);
            if !more || empty {
                return Ok(keys);
            }
        }
    }
}

/// Outbound HTTP, to the hosts the grant's allow-list names.
pub mod outbound {
    #[allow(unused_imports, reason = "used on the bare-metal target")]
    use super::*;
    #[allow(unused_imports, reason = "used on the bare-metal target")]
    use crate::http::{Request, Response};

    /// Sends `request` (its target an absolute `http://` or `https://` URL) and returns the
    /// response, whatever its status (`glint:http/send@1`). Redirects are not followed.
    ///
    /// # Errors
    /// The host is not allowed (`denied`, naming the rule), the per-request limit of outbound
    /// requests is reached (`quota_exceeded`), the timeout passed (`timeout`), the response is
    /// above the size cap (`too_large`), the connection failed (`unavailable`), or the request
    /// is malformed (`invalid`).
    #[cfg(target_os = "none")]
    pub fn send(request: &Request) -> Result<Response, HostCallError> {
        let bytes = request.encode().map_err(|e| local(alloc::format!("{e}")))?;
        let response: Vec<u8> = crate::host::call(abi::HTTP_SEND, (bytes,))?;
        Response::decode(&response).map_err(|e| local(alloc::format!("bad response from the host: {e}")))
    }

    /// `GET url`.
    ///
    /// # Errors
    /// As [`send`].
    #[cfg(target_os = "none")]
    pub fn get(url: &str) -> Result<Response, HostCallError> {
        send(&Request::new("GET", url))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    #[test]
    fn error_kinds_are_read_from_failed_calls_only() {
        let failed = |m: &str| HostCallError { code: Code::Failed.number(), message: m.to_string() };
        assert_eq!(ErrorKind::of(&failed("quota_exceeded: store `a` ...")), Some(ErrorKind::QuotaExceeded));
        assert_eq!(ErrorKind::of(&failed("denied: http://x:80 ...")), Some(ErrorKind::Denied));
        assert_eq!(ErrorKind::of(&failed("something else")), None);
        let not_found = HostCallError { code: Code::NotFound.number(), message: "denied: x".to_string() };
        assert_eq!(ErrorKind::of(&not_found), None);
        for (name, kind) in ErrorKind::ALL {
            assert_eq!(kind.as_str(), name);
        }
    }

    #[test]
    fn host_encodings_decode() {
        assert_eq!(decode_option(vec![0]).unwrap(), None);
        assert_eq!(decode_option(vec![1, 7]).unwrap(), Some(vec![7]));
        assert_eq!(decode_option(vec![]).unwrap_err().code, HostCallError::LOCAL);
        let mut page = vec![];
        abi::put_key_page_head(&mut page, 1).unwrap();
        abi::put_key(&mut page, "k").unwrap();
        abi::put_key_page_end(&mut page, true).unwrap();
        assert_eq!(decode_page(&page).unwrap(), (vec![String::from("k")], true));
        assert!(decode_page(&page[..page.len() - 1]).is_err());
    }
}
