//! A small HTTP/1.1 server-side codec: read one request (head + `Content-Length` or chunked
//! body), write one response head. Hand-written so faults can be injected at the byte level;
//! every connection serves exactly one request (`Connection: close`).

use std::fmt::Write as _;
use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Size limits for one request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Request line plus headers.
    pub max_head: usize,
    /// Decoded body.
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_head: 64 * 1024, max_body: 128 * 1024 * 1024 }
    }
}

/// First value of a header in `headers`, by case-insensitive name.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// One parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The request target as sent (path and optional query).
    pub target: String,
    /// Header names as sent, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// First value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// The target without its query string.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }
}

/// Why no request could be read.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The peer closed the connection before sending anything (not worth an answer).
    #[error("connection closed before a request")]
    Closed,
    /// The peer closed the connection mid-request.
    #[error("connection closed mid-request")]
    Incomplete,
    #[error("request head larger than {0} bytes")]
    HeadTooLarge(usize),
    #[error("request body larger than {0} bytes")]
    BodyTooLarge(usize),
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

fn malformed(what: impl Into<String>) -> ParseError {
    ParseError::Malformed(what.into())
}

/// The request line and headers; the body is read separately.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
}

/// How the body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Length(usize),
    Chunked,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// `Transfer-Encoding: chunked` or a single consistent `Content-Length` (none = empty).
    /// Both at once is refused (request smuggling shape).
    pub fn body_kind(&self) -> Result<BodyKind, ParseError> {
        let mut lengths = self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case("content-length"));
        let length = match lengths.next() {
            None => None,
            Some((_, v)) => {
                let n: usize = v.trim().parse().map_err(|_| malformed("bad Content-Length"))?;
                if lengths.any(|(_, other)| other.trim() != v.trim()) {
                    return Err(malformed("conflicting Content-Length headers"));
                }
                Some(n)
            }
        };
        match (self.header("transfer-encoding"), length) {
            (Some(_), Some(_)) => Err(malformed("both Transfer-Encoding and Content-Length")),
            (Some(te), None) if te.trim().eq_ignore_ascii_case("chunked") => Ok(BodyKind::Chunked),
            (Some(_), None) => Err(malformed("unsupported Transfer-Encoding")),
            (None, n) => Ok(BodyKind::Length(n.unwrap_or(0))),
        }
    }
}

/// Parses the head at the start of `buf`: `Ok(None)` until the blank line has arrived, then
/// the head and the bytes it took. Accepts bare `\n` line ends.
pub fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, ParseError> {
    let Some(end) = find_head_end(buf) else { return Ok(None) };
    let text = std::str::from_utf8(&buf[..end]).map_err(|_| malformed("head is not UTF-8"))?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("request line must be `METHOD target HTTP/1.x`"));
    };
    if method.is_empty() || !method.bytes().all(is_token_byte) {
        return Err(malformed("bad method"));
    }
    if !target.starts_with('/') {
        return Err(malformed("target must be an absolute path"));
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(malformed("unsupported HTTP version"));
    }
    let mut headers = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        if line.starts_with([' ', '\t']) {
            return Err(malformed("folded header lines are not supported"));
        }
        let (name, value) = line.split_once(':').ok_or_else(|| malformed("header without a colon"))?;
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(malformed("bad header name"));
        }
        headers.push((name.to_string(), value.trim().to_string()));
    }
    Ok(Some((Head { method: method.to_string(), target: target.to_string(), headers }, end)))
}

/// Index just past the blank line ending the head.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(offset) = buf[i..].iter().position(|&b| b == b'\n') {
        let nl = i + offset;
        let rest = &buf[nl + 1..];
        if rest.starts_with(b"\r\n") {
            return Some(nl + 3);
        }
        if rest.starts_with(b"\n") {
            return Some(nl + 2);
        }
        i = nl + 1;
    }
    None
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Decodes a complete chunked body at the start of `buf` (trailers are skipped): `Ok(None)`
/// while more bytes are needed, else the body and the bytes consumed.
pub fn decode_chunked(buf: &[u8], max_body: usize) -> Result<Option<(Vec<u8>, usize)>, ParseError> {
    let mut body = Vec::new();
    let mut pos = 0;
    loop {
        let Some(line_len) = buf[pos..].iter().position(|&b| b == b'\n') else { return Ok(None) };
        let line = std::str::from_utf8(&buf[pos..pos + line_len]).map_err(|_| malformed("bad chunk size"))?;
        let size_text = line.trim_end_matches('\r').split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| malformed("bad chunk size"))?;
        pos += line_len + 1;
        if size == 0 {
            // Trailer section: lines until an empty one.
            loop {
                let Some(len) = buf[pos..].iter().position(|&b| b == b'\n') else { return Ok(None) };
                let empty = buf[pos..pos + len].iter().all(|&b| b == b'\r');
                pos += len + 1;
                if empty {
                    return Ok(Some((body, pos)));
                }
            }
        }
        if body.len() + size > max_body {
            return Err(ParseError::BodyTooLarge(max_body));
        }
        if buf.len() < pos + size + 1 {
            return Ok(None);
        }
        body.extend_from_slice(&buf[pos..pos + size]);
        pos += size;
        match &buf[pos..] {
            [b'\r', b'\n', ..] => pos += 2,
            [b'\n', ..] => pos += 1,
            [b'\r'] => return Ok(None),
            _ => return Err(malformed("chunk not followed by a line end")),
        }
    }
}

/// Reads one request. Answers `Expect: 100-continue` so clients that wait for it send the body.
pub async fn read_request<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    limits: Limits,
) -> Result<Request, ParseError> {
    let mut buf = Vec::with_capacity(4096);
    let (head, head_len) = loop {
        if let Some(parsed) = parse_head(&buf)? {
            break parsed;
        }
        if buf.len() > limits.max_head {
            return Err(ParseError::HeadTooLarge(limits.max_head));
        }
        if read_more(stream, &mut buf).await? == 0 {
            return Err(if buf.is_empty() { ParseError::Closed } else { ParseError::Incomplete });
        }
    };
    if head_len > limits.max_head {
        return Err(ParseError::HeadTooLarge(limits.max_head));
    }
    let kind = head.body_kind()?;
    if head.header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
    }
    buf.drain(..head_len);
    let body = match kind {
        BodyKind::Length(n) if n > limits.max_body => return Err(ParseError::BodyTooLarge(limits.max_body)),
        BodyKind::Length(n) => {
            while buf.len() < n {
                if read_more(stream, &mut buf).await? == 0 {
                    return Err(ParseError::Incomplete);
                }
            }
            buf.truncate(n);
            buf
        }
        BodyKind::Chunked => loop {
            if let Some((body, _)) = decode_chunked(&buf, limits.max_body)? {
                break body;
            }
            if buf.len() > limits.max_body + limits.max_head {
                return Err(ParseError::BodyTooLarge(limits.max_body));
            }
            if read_more(stream, &mut buf).await? == 0 {
                return Err(ParseError::Incomplete);
            }
        },
    };
    Ok(Request { method: head.method, target: head.target, headers: head.headers, body })
}

async fn read_more<R: AsyncRead + Unpin>(stream: &mut R, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut chunk = [0u8; 16 * 1024];
    let n = stream.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

/// A response head with `Content-Length: content_length` and `Connection: close`.
pub fn response_head(status: u16, headers: &[(&str, String)], content_length: usize) -> Vec<u8> {
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (name, value) in headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    let _ = write!(head, "Content-Length: {content_length}\r\nConnection: close\r\n\r\n");
    head.into_bytes()
}

/// Writes a complete response and flushes it.
pub async fn write_response<W: AsyncWrite + Unpin>(
    stream: &mut W,
    status: u16,
    headers: &[(&str, String)],
    body: &[u8],
) -> io::Result<()> {
    stream.write_all(&response_head(status, headers, body.len())).await?;
    stream.write_all(body).await?;
    stream.flush().await
}

/// Standard reason phrase (clients ignore it; it helps when reading captures).
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_needs_the_blank_line() {
        assert!(parse_head(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap().is_none());
        let (head, used) =
            parse_head(b"GET /abc?x=1 HTTP/1.1\r\nHost: x\r\nIf-None-Match:  \"v1\" \r\n\r\nBODY").unwrap().unwrap();
        assert_eq!(used, 57);
        assert_eq!(head.method, "GET");
        assert_eq!(head.target, "/abc?x=1");
        assert_eq!(head.header("if-none-match"), Some("\"v1\""));
        assert_eq!(head.body_kind().unwrap(), BodyKind::Length(0));
    }

    #[test]
    fn bare_newlines_are_accepted() {
        let (head, used) = parse_head(b"POST /x HTTP/1.0\nContent-Length: 3\n\nabc").unwrap().unwrap();
        assert_eq!(used, 36);
        assert_eq!(head.body_kind().unwrap(), BodyKind::Length(3));
    }

    #[test]
    fn malformed_heads_are_refused() {
        for bad in [
            &b"GET /\r\n\r\n"[..],
            b"GET / HTTP/2\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET x HTTP/1.1\r\n\r\n",
            b"G(T / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nNoColon\r\n\r\n",
            b"GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Name: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: \xff\r\n\r\n",
        ] {
            assert!(matches!(parse_head(bad), Err(ParseError::Malformed(_))), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn body_kinds() {
        let kind = |h: &[u8]| parse_head(h).unwrap().unwrap().0.body_kind();
        assert_eq!(kind(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap(), BodyKind::Chunked);
        assert_eq!(
            kind(b"POST / HTTP/1.1\r\ncontent-length: 5\r\nContent-Length: 5\r\n\r\n").unwrap(),
            BodyKind::Length(5)
        );
        assert!(kind(b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n").is_err());
        assert!(kind(b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n").is_err());
        assert!(kind(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
        assert!(kind(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n").is_err());
    }

    #[test]
    fn chunked_bodies() {
        let full = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        let (body, used) = decode_chunked(full, 1024).unwrap().unwrap();
        assert_eq!(body, b"Wikipedia");
        assert_eq!(&full[used..], b"NEXT");
        for cut in 0..full.len() - 4 {
            assert!(decode_chunked(&full[..cut], 1024).unwrap().is_none(), "cut at {cut}");
        }
        assert!(matches!(decode_chunked(b"zz\r\n", 1024), Err(ParseError::Malformed(_))));
        assert!(matches!(decode_chunked(b"4\r\nWikiXX", 1024), Err(ParseError::Malformed(_))));
        assert!(matches!(decode_chunked(b"10\r\n", 8), Err(ParseError::BodyTooLarge(8))));
    }

    /// Feeds `input` in small pieces, as a slow client would.
    async fn read_from(input: &[u8], limits: Limits) -> Result<Request, ParseError> {
        let (mut client, mut server) = tokio::io::duplex(64);
        let input = input.to_vec();
        let writer = tokio::spawn(async move {
            for piece in input.chunks(3) {
                if client.write_all(piece).await.is_err() {
                    break;
                }
            }
            let _ = client.shutdown().await;
            // Keep reading (100 Continue) until the server side is dropped.
            let mut sink = Vec::new();
            let _ = client.read_to_end(&mut sink).await;
            sink
        });
        let result = read_request(&mut server, limits).await;
        drop(server);
        let _ = writer.await;
        result
    }

    #[tokio::test]
    async fn reads_requests_arriving_in_pieces() {
        let request =
            read_from(b"POST /v1/clientFlagLogs:write HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", Limits::default())
                .await
                .unwrap();
        assert_eq!(request.method, "POST");
        assert_eq!(request.path(), "/v1/clientFlagLogs:write");
        assert_eq!(request.body, b"hello");

        let chunked = read_from(
            b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            Limits::default(),
        )
        .await
        .unwrap();
        assert_eq!(chunked.body, b"abc");
    }

    #[tokio::test]
    async fn read_errors() {
        assert!(matches!(read_from(b"", Limits::default()).await, Err(ParseError::Closed)));
        assert!(matches!(read_from(b"GET / HT", Limits::default()).await, Err(ParseError::Incomplete)));
        assert!(matches!(
            read_from(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc", Limits::default()).await,
            Err(ParseError::Incomplete)
        ));
        let small = Limits { max_head: 32, max_body: 4 };
        assert!(matches!(
            read_from(b"GET / HTTP/1.1\r\nX-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n", small).await,
            Err(ParseError::HeadTooLarge(32))
        ));
        assert!(matches!(
            read_from(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", Limits { max_head: 64, ..small }).await,
            Err(ParseError::BodyTooLarge(4))
        ));
    }

    #[test]
    fn response_heads() {
        let head = response_head(304, &[("ETag", "\"v1\"".into())], 0);
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    }
}
