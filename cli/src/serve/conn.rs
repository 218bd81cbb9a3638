//! One client connection's byte stream, between the socket and hyper.
//!
//! Two jobs hyper does not do for us:
//! - **Refuse request smuggling.** A request with both `Content-Length` and `Transfer-Encoding`
//!   is one that two HTTP parsers may frame differently (RFC 9112 section 6.3). hyper follows
//!   the RFC (chunked wins, the connection closes after) but does not refuse it, and the service
//!   cannot tell: hyper drops the `Content-Length` before we see the request. So [`Framing`]
//!   reads along (each head with httparse, then the body by its framing) and breaks the
//!   `Transfer-Encoding` header name of such a request, which makes hyper answer 400 and close.
//!   On anything it cannot follow it stops looking (hyper then refuses the connection itself).
//! - **Lingering close.** When the server closes a connection whose client is still sending (a
//!   body refused with 413), closing at once makes the kernel answer the unread bytes with a
//!   reset, which can destroy the response before the client reads it. Dropping a [`ConnIo`]
//!   shuts down the write side and drains the read side for a short while first.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// How long and how much a closed connection is drained.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;

/// Where [`Framing`] is in the request stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Collecting a request head.
    Head,
    /// Passing `n` more body bytes.
    Fixed(u64),
    /// At a chunk-size line.
    ChunkSize,
    /// Passing `n` more chunk bytes, then the CRLF after them (`crlf` bytes of it left).
    ChunkData { left: u64, crlf: u8 },
    /// In the trailer section after the last chunk.
    Trailers,
    /// No longer following (an upgrade, something malformed, or a head too large): pass all.
    Passthrough,
}

/// Follows HTTP/1 request framing on the bytes read from a client; see the module docs.
#[derive(Debug)]
pub struct Framing {
    state: State,
    /// Bytes read but not yet released to hyper (a partial head or chunk-size line).
    held: Vec<u8>,
    /// Largest head (and trailer section) held before giving up (hyper answers 431 then).
    max_head: usize,
    max_headers: usize,
    /// Requests with both Content-Length and Transfer-Encoding seen.
    pub smuggling_refused: u64,
}

impl Framing {
    /// Follows requests of at most `max_head` bytes of head and `max_headers` headers.
    pub fn new(max_head: usize, max_headers: usize) -> Framing {
        Framing { state: State::Head, held: Vec::new(), max_head, max_headers, smuggling_refused: 0 }
    }

    /// Takes newly read bytes, appends to `out` what may go to hyper now.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        if self.state == State::Passthrough {
            out.extend_from_slice(input);
            return;
        }
        let mut data = std::mem::take(&mut self.held);
        data.extend_from_slice(input);
        let mut pos = 0;
        while pos < data.len() {
            let rest = data.get(pos..).unwrap_or_default();
            match self.state {
                State::Passthrough => {
                    out.extend_from_slice(rest);
                    pos = data.len();
                }
                State::Head => match self.head(rest) {
                    Some((used, bytes)) => {
                        out.extend_from_slice(&bytes);
                        pos += used;
                    }
                    None => {
                        if rest.len() > self.max_head {
                            self.state = State::Passthrough;
                            continue;
                        }
                        self.held = rest.to_vec();
                        return;
                    }
                },
                State::Fixed(n) => {
                    let take = usize::try_from(n).unwrap_or(usize::MAX).min(rest.len());
                    out.extend_from_slice(rest.get(..take).unwrap_or_default());
                    pos += take;
                    let left = n - take as u64;
                    self.state = if left == 0 { State::Head } else { State::Fixed(left) };
                }
                State::ChunkSize => match httparse::parse_chunk_size(rest) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        out.extend_from_slice(rest.get(..used).unwrap_or_default());
                        pos += used;
                        self.state = if size == 0 { State::Trailers } else { State::ChunkData { left: size, crlf: 2 } };
                    }
                    Ok(httparse::Status::Partial) if rest.len() <= 1024 => {
                        self.held = rest.to_vec();
                        return;
                    }
                    _ => self.state = State::Passthrough,
                },
                State::ChunkData { left: 0, crlf } => {
                    let expect: &[u8] = if crlf == 2 { b"\r\n" } else { b"\n" };
                    let n = usize::from(crlf).min(rest.len());
                    if rest.get(..n) != expect.get(..n) {
                        self.state = State::Passthrough;
                        continue;
                    }
                    out.extend_from_slice(rest.get(..n).unwrap_or_default());
                    pos += n;
                    let crlf = crlf - n as u8;
                    self.state = if crlf == 0 { State::ChunkSize } else { State::ChunkData { left: 0, crlf } };
                }
                State::ChunkData { left, crlf } => {
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(rest.len());
                    out.extend_from_slice(rest.get(..take).unwrap_or_default());
                    pos += take;
                    self.state = State::ChunkData { left: left - take as u64, crlf };
                }
                State::Trailers => {
                    // Trailer lines end at an empty line.
                    match find_empty_line(rest) {
                        Some(end) => {
                            out.extend_from_slice(rest.get(..end).unwrap_or_default());
                            pos += end;
                            self.state = State::Head;
                        }
                        None if rest.len() <= self.max_head => {
                            self.held = rest.to_vec();
                            return;
                        }
                        None => self.state = State::Passthrough,
                    }
                }
            }
        }
    }

    /// Parses a complete head at the start of `data`: how many bytes it took and the bytes to
    /// release (rewritten when it smuggles). `None`: incomplete.
    fn head(&mut self, data: &[u8]) -> Option<(usize, Vec<u8>)> {
        let mut headers = vec![httparse::EMPTY_HEADER; self.max_headers.saturating_add(1)];
        let mut req = httparse::Request::new(&mut headers);
        let len = match req.parse(data) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return None,
            Err(_) => {
                // hyper will refuse it too (400 or 431) and close.
                self.state = State::Passthrough;
                return Some((data.len(), data.to_vec()));
            }
        };
        let mut content_length: Option<u64> = None;
        let mut chunked = false;
        let mut te_name_at = None;
        let mut has_cl = false;
        let mut upgrading = req.method == Some("CONNECT");
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                has_cl = true;
                content_length = std::str::from_utf8(h.value).ok().and_then(|v| v.trim().parse().ok());
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = std::str::from_utf8(h.value).is_ok_and(|v| {
                    v.rsplit(',').next().is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
                });
                // Where the name starts in `data`: both slices point into it.
                te_name_at = (h.name.as_ptr() as usize).checked_sub(data.as_ptr() as usize);
            } else if h.name.eq_ignore_ascii_case("upgrade") {
                upgrading = true;
            }
        }
        let mut bytes = data.get(..len).unwrap_or_default().to_vec();
        if has_cl && te_name_at.is_some() {
            self.smuggling_refused += 1;
            // "Transfer-Encoding" becomes "Transfer Encoding": an invalid header name, so hyper
            // answers 400 and closes the connection.
            if let Some(b) = te_name_at.and_then(|at| bytes.get_mut(at + 8)) {
                *b = b' ';
            }
            self.state = State::Passthrough;
            return Some((len, bytes));
        }
        self.state = if upgrading {
            State::Passthrough
        } else if te_name_at.is_some() {
            if chunked {
                State::ChunkSize
            } else {
                State::Passthrough
            }
        } else if has_cl {
            match content_length {
                Some(0) => State::Head,
                Some(n) => State::Fixed(n),
                None => State::Passthrough,
            }
        } else {
            State::Head
        };
        Some((len, bytes))
    }
}

/// End of the first empty line (`\r\n` or `\n`) at a line start in `data`, counting the trailer
/// lines before it.
fn find_empty_line(data: &[u8]) -> Option<usize> {
    let mut line_start = 0;
    loop {
        let rest = data.get(line_start..)?;
        let nl = rest.iter().position(|&b| b == b'\n')?;
        let line = rest.get(..nl)?;
        if line.is_empty() || line == b"\r" {
            return Some(line_start + nl + 1);
        }
        line_start += nl + 1;
    }
}

/// A client connection as hyper sees it: the socket, the framing check on what is read, and a
/// lingering close when dropped. `permit` (the connection's place under `max_connections`) is
/// held until the linger is over.
pub struct ConnIo {
    stream: Option<TcpStream>,
    framing: Framing,
    /// Bytes released by `framing` and not yet given to hyper.
    ready: Vec<u8>,
    ready_pos: usize,
    scratch: Box<[u8]>,
    permit: Option<Box<dyn Send>>,
}

impl std::fmt::Debug for ConnIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnIo").field("framing", &self.framing).finish_non_exhaustive()
    }
}

impl ConnIo {
    /// Wraps an accepted socket.
    pub fn new(stream: TcpStream, framing: Framing, permit: impl Send + 'static) -> Self {
        ConnIo {
            stream: Some(stream),
            framing,
            ready: Vec::new(),
            ready_pos: 0,
            scratch: vec![0; 16 << 10].into(),
            permit: Some(Box::new(permit)),
        }
    }

    fn stream(&mut self) -> io::Result<&mut TcpStream> {
        self.stream.as_mut().ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

impl AsyncRead for ConnIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.ready_pos < this.ready.len() {
                let avail = this.ready.get(this.ready_pos..).unwrap_or_default();
                let n = avail.len().min(buf.remaining());
                buf.put_slice(avail.get(..n).unwrap_or_default());
                this.ready_pos += n;
                if this.ready_pos == this.ready.len() {
                    this.ready.clear();
                    this.ready_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            let ConnIo { stream, scratch, framing, ready, .. } = this;
            let stream = stream.as_mut().ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))?;
            let mut rb = ReadBuf::new(scratch);
            ready!(Pin::new(stream).poll_read(cx, &mut rb))?;
            let got = rb.filled();
            if got.is_empty() {
                // EOF: whatever is still held (a partial head) goes to hyper, which reports it.
                ready.append(&mut framing.held);
                if ready.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            framing.feed(got, ready);
        }
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().stream()?).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().stream()?).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().stream()?).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().stream()?).poll_shutdown(cx)
    }
}

impl Drop for ConnIo {
    fn drop(&mut self) {
        let (Some(stream), permit) = (self.stream.take(), self.permit.take()) else { return };
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        rt.spawn(linger(stream, permit));
    }
}

async fn linger(mut stream: TcpStream, permit: Option<Box<dyn Send>>) {
    let _ = tokio::time::timeout(LINGER_TIME, async {
        let _ = stream.shutdown().await;
        let mut buf = vec![0u8; 16 << 10];
        let mut drained = 0;
        while drained < LINGER_BYTES {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
    drop(permit);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` split at every `step` bytes; returns what hyper would see.
    fn run(input: &[u8], step: usize) -> (Vec<u8>, u64) {
        let mut f = Framing::new(16 << 10, 100);
        let mut out = Vec::new();
        for chunk in input.chunks(step.max(1)) {
            f.feed(chunk, &mut out);
        }
        out.extend_from_slice(&f.held);
        (out, f.smuggling_refused)
    }

    const PIPELINE: &[u8] = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
GET /b HTTP/1.1\r\nHost: x\r\n\r\n\
POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n1;ext=1\r\nd\r\n0\r\nX-T: 1\r\n\r\n\
POST /d HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi";

    #[test]
    fn honest_pipelines_pass_unchanged_however_they_are_split() {
        for step in [1, 2, 3, 7, 16, 64, 1000] {
            assert_eq!(run(PIPELINE, step), (PIPELINE.to_vec(), 0), "step {step}");
        }
    }

    #[test]
    fn content_length_with_transfer_encoding_is_broken_for_hyper_to_refuse() {
        let smuggle: &[u8] = b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\n\r\n";
        for step in [1, 5, 1000] {
            let mut input = PIPELINE.to_vec();
            input.extend_from_slice(smuggle);
            let (out, refused) = run(&input, step);
            assert_eq!(refused, 1, "step {step}");
            let text = String::from_utf8(out).unwrap();
            assert!(text.contains("Transfer Encoding: chunked"), "{text}");
            assert!(text.starts_with(std::str::from_utf8(PIPELINE).unwrap()));
        }
        // Order does not matter, nor does case.
        let te_first: &[u8] = b"POST /x HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 4\r\n\r\n";
        let (out, refused) = run(te_first, 3);
        assert_eq!(refused, 1);
        assert!(out.starts_with(b"POST /x HTTP/1.1\r\ntransfer encoding: chunked"));
    }

    #[test]
    fn smuggling_inside_a_body_is_only_a_body() {
        let body = b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut input = format!("POST /x HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        input.extend_from_slice(body);
        assert_eq!(run(&input, 4), (input.clone(), 0));
    }

    #[test]
    fn what_it_cannot_follow_passes_through() {
        let bad_chunk: &[u8] = b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nGET /y HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(run(bad_chunk, 1000), (bad_chunk.to_vec(), 0));
        let huge_head = [b"GET / HTTP/1.1\r\n".as_slice(), &vec![b'a'; 20_000]].concat();
        assert_eq!(run(&huge_head, 4096), (huge_head.clone(), 0));
        let garbage = b"\x16\x03\x01 not http at all\r\n\r\n".to_vec();
        assert_eq!(run(&garbage, 3), (garbage.clone(), 0));
    }
}
