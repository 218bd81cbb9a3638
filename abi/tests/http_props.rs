//! Properties of the HTTP and capability encodings (`glint_abi::http`, `glint_abi::caps`) on
//! generated messages and bytes: valid messages round-trip; every cut of a valid encoding and
//! every extra byte is refused; arbitrary bytes never make a decoder panic, and whatever a decoder
//! accepts re-encodes to the same bytes (one spelling only), so the validation of the decoder and
//! of the encoder agree.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use glint_abi::caps::{put_key, put_key_page_end, put_key_page_head, put_option, read_key_page, read_option};
use glint_abi::http::{put_request, put_response, read_request, read_response, HttpDecodeError};
use glint_abi::wire::DecodeError;
use proptest::collection::vec;
use proptest::prelude::*;

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,20}"
}

fn header() -> impl Strategy<Value = (String, Vec<u8>)> {
    (token(), vec(any::<u8>().prop_filter("no CR LF NUL", |b| !matches!(b, b'\r' | b'\n' | 0)), 0..40))
}

#[derive(Clone, Debug)]
struct Req {
    method: String,
    target: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

fn request() -> impl Strategy<Value = Req> {
    (token(), "[!-~]{1,60}", vec(header(), 0..8), vec(any::<u8>(), 0..200))
        .prop_map(|(method, target, headers, body)| Req { method, target, headers, body })
}

fn encode_request(r: &Req) -> Vec<u8> {
    let mut v = Vec::new();
    put_request(&mut v, &r.method, &r.target, r.headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())), &r.body)
        .unwrap();
    v
}

fn encode_response(status: u16, headers: &[(String, Vec<u8>)], body: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    put_response(&mut v, status, headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())), body).unwrap();
    v
}

/// Random bytes, and valid requests with one byte changed (which decoders mostly see).
fn hostile_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..300),
        (request(), any::<prop::sample::Index>(), any::<u8>()).prop_map(|(r, at, b)| {
            let mut bytes = encode_request(&r);
            let i = at.index(bytes.len());
            bytes[i] = b;
            bytes
        }),
    ]
}

fn config() -> ProptestConfig {
    let default = ProptestConfig::default();
    ProptestConfig { cases: if cfg!(miri) { 4 } else { default.cases }, ..default }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn requests_round_trip(r in request()) {
        let bytes = encode_request(&r);
        let d = read_request(&bytes).unwrap();
        prop_assert_eq!(d.method, r.method.as_str());
        prop_assert_eq!(d.target, r.target.as_str());
        prop_assert_eq!(d.body, r.body.as_slice());
        let headers: Vec<(String, Vec<u8>)> = d.headers.map(|h| (h.name.to_owned(), h.value.to_vec())).collect();
        prop_assert_eq!(headers, r.headers.clone());
    }

    #[test]
    fn responses_round_trip(status in 100u16..=999, headers in vec(header(), 0..8), body in vec(any::<u8>(), 0..200)) {
        let bytes = encode_response(status, &headers, &body);
        let d = read_response(&bytes).unwrap();
        prop_assert_eq!(d.status, status);
        prop_assert_eq!(d.body, body.as_slice());
        prop_assert_eq!(d.headers.len(), headers.len());
    }

    #[test]
    fn every_cut_and_every_extra_byte_is_refused(r in request(), extra in any::<u8>()) {
        let bytes = encode_request(&r);
        for cut in 0..bytes.len() {
            prop_assert!(read_request(&bytes[..cut]).is_err(), "cut at {}", cut);
        }
        let mut longer = bytes.clone();
        longer.push(extra);
        prop_assert_eq!(read_request(&longer).unwrap_err(), HttpDecodeError::Wire(DecodeError::TrailingBytes(1)));
    }

    #[test]
    fn accepted_bytes_have_one_spelling(bytes in hostile_bytes()) {
        if let Ok(d) = read_request(&bytes) {
            let again = Req {
                method: d.method.to_owned(),
                target: d.target.to_owned(),
                headers: d.headers.map(|h| (h.name.to_owned(), h.value.to_vec())).collect(),
                body: d.body.to_vec(),
            };
            prop_assert_eq!(encode_request(&again), bytes.clone());
        }
        if let Ok(d) = read_response(&bytes) {
            let headers: Vec<(String, Vec<u8>)> = d.headers.map(|h| (h.name.to_owned(), h.value.to_vec())).collect();
            prop_assert_eq!(encode_response(d.status, &headers, d.body), bytes.clone());
        }
        if let Ok(page) = read_key_page(&bytes) {
            let more = page.more;
            let keys: Vec<&str> = page.collect();
            let mut v = Vec::new();
            put_key_page_head(&mut v, keys.len()).unwrap();
            for k in &keys {
                put_key(&mut v, k).unwrap();
            }
            put_key_page_end(&mut v, more).unwrap();
            prop_assert_eq!(v, bytes.clone());
        }
        if let Ok(opt) = read_option(&bytes) {
            let mut v = Vec::new();
            put_option(&mut v, opt).unwrap();
            prop_assert_eq!(v, bytes);
        }
    }
}
