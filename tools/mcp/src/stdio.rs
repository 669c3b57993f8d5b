//! The stdio transport's guard against oversized messages.
//!
//! rmcp drops a stdio line over its limit without a word, so the client waits forever for an
//! answer. [`LineGuard`] sits between stdin and rmcp: it passes lines of up to
//! [`MAX_MESSAGE`] bytes through unchanged; of a longer one it passes only a prefix made
//! unparsable (which rmcp ignores), discards the rest, and then hands rmcp a small request of
//! its own, [`OVERSIZED_METHOD`], carrying the id found in the oversized line. The server
//! answers that request with a JSON-RPC error, so the client's call ends with a reason.

use serde_json::Value;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};

/// Largest message spendguard reads, on stdio and HTTP alike: a tool call is a few hundred
/// bytes, a memo at most 1 KiB.
pub(crate) const MAX_MESSAGE: usize = 1 << 20;

/// The request [`LineGuard`] puts in place of an oversized message.
pub(crate) const OVERSIZED_METHOD: &str = "spendguard/oversized_message";

/// How much of an oversized line's start and end is kept to find its id.
const ID_WINDOW: usize = 4096;

/// Reads lines from `inner`, replacing each one longer than `max` bytes by a request for
/// [`OVERSIZED_METHOD`] with the same id.
pub(crate) struct LineGuard<R> {
    inner: R,
    max: usize,
    /// Bytes of the current line read so far.
    line_len: usize,
    /// The current line's first bytes, and (once over `max`) its last ones.
    head: Vec<u8>,
    tail: Vec<u8>,
    /// The current line is over `max`: its bytes are dropped until its newline.
    discarding: bool,
    /// Bytes ready for the reader, from `sent` on.
    ready: Vec<u8>,
    sent: usize,
    scratch: Box<[u8]>,
}

impl<R> LineGuard<R> {
    pub(crate) fn new(inner: R, max: usize) -> LineGuard<R> {
        LineGuard {
            inner,
            max,
            line_len: 0,
            head: Vec::new(),
            tail: Vec::new(),
            discarding: false,
            ready: Vec::new(),
            sent: 0,
            scratch: vec![0; 64 * 1024].into_boxed_slice(),
        }
    }

    /// Moves `data` (read from `inner`) into `ready`, line by line.
    fn take_in(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let newline = data.iter().position(|&b| b == b'\n');
            let segment = &data[..newline.unwrap_or(data.len())];
            data = &data[newline.map_or(data.len(), |i| i + 1)..];
            let keep = segment.len().min(ID_WINDOW.saturating_sub(self.head.len()));
            self.head.extend_from_slice(&segment[..keep]);
            if !self.discarding && self.line_len + segment.len() > self.max {
                // A NUL makes the prefix already passed on invalid JSON even when it happens
                // to hold a whole message, so rmcp ignores it instead of answering it twice.
                self.ready.extend_from_slice(b"\0\n");
                self.discarding = true;
            }
            if self.discarding {
                self.tail.extend_from_slice(segment);
                if self.tail.len() > 2 * ID_WINDOW {
                    self.tail.drain(..self.tail.len() - ID_WINDOW);
                }
            } else {
                self.ready.extend_from_slice(segment);
            }
            self.line_len += segment.len();
            if newline.is_some() {
                self.end_line();
            }
        }
    }

    fn end_line(&mut self) {
        if self.discarding {
            // A line without an id is a notification (or not JSON-RPC): nobody waits on it.
            if let Some(id) = find_id(&self.head).or_else(|| find_id_last(&self.tail)) {
                let request = serde_json::json!({
                    "jsonrpc": "2.0",
                    "id": id,
                    "method": OVERSIZED_METHOD,
                    "params": { "bytes": self.line_len, "max": self.max },
                });
                self.ready.extend_from_slice(request.to_string().as_bytes());
                self.ready.push(b'\n');
            }
        } else {
            self.ready.push(b'\n');
        }
        self.discarding = false;
        self.line_len = 0;
        self.head.clear();
        self.tail.clear();
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for LineGuard<R> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.sent < this.ready.len() {
                let n = buf.remaining().min(this.ready.len() - this.sent);
                buf.put_slice(&this.ready[this.sent..this.sent + n]);
                this.sent += n;
                if this.sent == this.ready.len() {
                    this.ready.clear();
                    this.sent = 0;
                }
                return Poll::Ready(Ok(()));
            }
            let mut scratch = std::mem::take(&mut this.scratch);
            let mut read = ReadBuf::new(&mut scratch);
            let polled = Pin::new(&mut this.inner).poll_read(cx, &mut read);
            let filled = read.filled().len();
            if let Poll::Ready(Ok(())) = polled {
                this.take_in(&scratch[..filled]);
            }
            this.scratch = scratch;
            ready!(polled)?;
            if filled == 0 {
                // End of input: whatever is left of a line without its newline is not a message.
                return Poll::Ready(Ok(()));
            }
        }
    }
}

/// The value of the first `"id":` key in `bytes` (a number or a short string), if any.
fn find_id(bytes: &[u8]) -> Option<Value> {
    id_candidates(bytes).next()
}

/// The value of the last `"id":` key in `bytes`.
fn find_id_last(bytes: &[u8]) -> Option<Value> {
    id_candidates(bytes).last()
}

fn id_candidates(bytes: &[u8]) -> impl Iterator<Item = Value> + '_ {
    const KEY: &[u8] = b"\"id\"";
    (0..bytes.len().saturating_sub(KEY.len()))
        // Not `\"id\"` inside a string.
        .filter(move |&i| bytes[i..].starts_with(KEY) && (i == 0 || bytes[i - 1] != b'\\'))
        .filter_map(move |i| {
            let rest = trim_start(&bytes[i + KEY.len()..]);
            let rest = trim_start(rest.strip_prefix(b":")?);
            let end = match rest.first()? {
                b'"' => rest[1..].iter().position(|&b| b == b'"' || b == b'\\')? + 2,
                _ => rest.iter().position(|b| !(b.is_ascii_digit() || *b == b'-')).unwrap_or(rest.len()),
            };
            match serde_json::from_slice::<Value>(rest.get(..end.min(256))?) {
                Ok(id @ (Value::Number(_) | Value::String(_))) => Some(id),
                _ => None,
            }
        })
}

fn trim_start(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(bytes.len());
    &bytes[start..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    async fn guarded(input: &[u8], max: usize) -> String {
        let mut out = Vec::new();
        LineGuard::new(input, max).read_to_end(&mut out).await.unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn lines_within_the_limit_pass_unchanged() {
        let input = "{\"id\":1}\n{\"id\":2,\"method\":\"x\"}\n";
        assert_eq!(guarded(input.as_bytes(), 64).await, input);
    }

    #[tokio::test]
    async fn an_oversized_line_becomes_a_request_with_its_id() {
        let big =
            format!("{{\"jsonrpc\":\"2.0\",\"id\":\"call-7\",\"params\":\"{}\"}}\n{{\"id\":8}}\n", "x".repeat(500));
        let out = guarded(big.as_bytes(), 100).await;
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(serde_json::from_str::<Value>(lines[0]).is_err(), "the prefix is unparsable");
        let request: Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(request["id"], "call-7");
        assert_eq!(request["method"], OVERSIZED_METHOD);
        assert_eq!(request["params"]["bytes"], big.lines().next().unwrap().len());
        assert_eq!(lines[2], "{\"id\":8}");
    }

    #[tokio::test]
    async fn the_id_is_found_at_the_end_and_not_inside_strings() {
        let big = format!("{{\"params\":{{\"memo\":\"\\\"id\\\":5 {}\"}},\"id\":42}}\n", "y".repeat(10_000));
        let out = guarded(big.as_bytes(), 100).await;
        let request: Value = serde_json::from_str(out.lines().nth(1).unwrap()).unwrap();
        assert_eq!(request["id"], 42);
        // A notification (no id) is dropped: nobody waits for its answer.
        let out = guarded(format!("{{\"method\":\"n\",\"params\":\"{}\"}}\n", "z".repeat(500)).as_bytes(), 100).await;
        assert_eq!(out, "\0\n");
    }
}
