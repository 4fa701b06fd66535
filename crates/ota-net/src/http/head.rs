//! The response head: status line and the header fields this client uses, parsed from a byte
//! buffer without allocating (values that outlive the buffer are copied into fixed-size
//! [`Text`]s).

use core::fmt;

/// Most header fields in one response head (the std client's bound, `MAX_HEADER_FIELDS`).
pub const MAX_HEADER_FIELDS: usize = 100;
/// Longest `ETag` value kept, quotes and `W/` included. RFC 9110 §8.8.3 sets no limit; ETags
/// from real servers are tens of bytes.
pub const MAX_ETAG: usize = 128;
/// Longest `Location` value kept (a redirect's target).
pub const MAX_LOCATION: usize = 512;
/// Longest `Last-Modified` value kept (an IMF-fixdate is 29 bytes, RFC 9110 §5.6.7).
pub const MAX_DATE: usize = 64;

/// Visible ASCII text of at most `N` bytes, stored inline.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Text<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> Text<N> {
    /// `None` when `s` is longer than `N` or holds anything but visible ASCII and spaces.
    pub fn new(s: &[u8]) -> Option<Text<N>> {
        if s.len() > N || !s.iter().all(|b| (0x20..0x7f).contains(b)) {
            return None;
        }
        let mut buf = [0; N];
        buf[..s.len()].copy_from_slice(s);
        Some(Text { buf, len: s.len() })
    }

    pub fn as_str(&self) -> &str {
        // Only visible ASCII is ever stored.
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl<const N: usize> fmt::Debug for Text<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl<const N: usize> fmt::Display for Text<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An entity tag (RFC 9110 §8.8.3): `"opaque"` (strong) or `W/"opaque"` (weak).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ETag {
    text: Text<MAX_ETAG>,
}

impl ETag {
    /// Parses a field value; `None` if it is not a well-formed entity tag.
    pub fn parse(v: &[u8]) -> Option<ETag> {
        let opaque = v.strip_prefix(b"W/").unwrap_or(v);
        let inner = opaque.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
        // etagc = %x21 / %x23-7E / obs-text; obs-text is refused here (kept ASCII).
        if !inner
            .iter()
            .all(|&b| b == 0x21 || (0x23..0x7f).contains(&b))
        {
            return None;
        }
        Text::new(v).map(|text| ETag { text })
    }

    /// Weak tags (`W/"…"`) may not be used in `If-Range` or strong comparison.
    pub fn is_weak(&self) -> bool {
        self.text.as_str().starts_with("W/")
    }

    /// The field value as sent (`W/"x"` or `"x"`).
    pub fn as_str(&self) -> &str {
        self.text.as_str()
    }

    /// Strong comparison (RFC 9110 §8.8.3.2): both strong and the same characters.
    pub fn strong_eq(&self, other: &ETag) -> bool {
        !self.is_weak() && !other.is_weak() && self.as_str() == other.as_str()
    }
}

impl fmt::Display for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `Content-Range` value (RFC 9110 §14.4) in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentRange {
    /// `bytes first-last/complete` (`complete` is `None` for `*`).
    Bytes {
        first: u64,
        last: u64,
        complete_length: Option<u64>,
    },
    /// `bytes */complete` (in a 416 answer).
    Unsatisfied { complete_length: u64 },
}

impl ContentRange {
    pub fn parse(v: &[u8]) -> Option<ContentRange> {
        let rest = v.strip_prefix(b"bytes ")?;
        let slash = rest.iter().position(|&b| b == b'/')?;
        let (range, complete) = (&rest[..slash], &rest[slash + 1..]);
        if range == b"*" {
            return Some(ContentRange::Unsatisfied {
                complete_length: number(complete)?,
            });
        }
        let dash = range.iter().position(|&b| b == b'-')?;
        let first = number(&range[..dash])?;
        let last = number(&range[dash + 1..])?;
        let complete_length = if complete == b"*" {
            None
        } else {
            Some(number(complete)?)
        };
        if last < first || complete_length.is_some_and(|c| last >= c) {
            return None;
        }
        Some(ContentRange::Bytes {
            first,
            last,
            complete_length,
        })
    }
}

/// token = 1*tchar (RFC 9110 §5.6.2): visible ASCII without delimiters.
pub(crate) fn is_token(s: &[u8]) -> bool {
    !s.is_empty()
        && s.iter()
            .all(|&b| b.is_ascii_graphic() && !b"\"(),/:;<=>?@[\\]{}".contains(&b))
}

/// Decimal digits only (no sign, no spaces), at most 19 so that it fits in a u64.
pub(crate) fn number(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// Why a response head was refused. `line` counts from 1 (the status line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeadError {
    /// The status line does not start with `HTTP/1.x `.
    NotHttp1,
    /// The status code is not three digits from 100 to 599.
    BadStatus,
    /// A header line without `:`.
    NoColon { line: usize },
    /// An empty header name, or one with spaces or control characters.
    BadName { line: usize },
    /// A continuation line (obs-fold) before any header field.
    LeadingFold,
    /// More than [`MAX_HEADER_FIELDS`] fields.
    TooManyFields,
    /// `Content-Length` that is not a decimal number.
    BadContentLength { line: usize },
    /// Two `Content-Length` values that differ.
    ConflictingContentLength { line: usize },
    /// A `Transfer-Encoding` whose last coding is not `chunked`.
    UnsupportedTransferEncoding { line: usize },
    /// A `Content-Range` that is not `bytes a-b/c`, `bytes a-b/*` or `bytes */c`.
    BadContentRange { line: usize },
    /// A redirect whose `Location` is longer than [`MAX_LOCATION`] or not visible ASCII.
    BadLocation { line: usize },
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeadError::NotHttp1 => f.write_str("the status line is not HTTP/1.x"),
            HeadError::BadStatus => f.write_str("the status code is not 3 digits from 100 to 599"),
            HeadError::NoColon { line } => write!(f, "head line {line} has no `:`"),
            HeadError::BadName { line } => write!(f, "head line {line}: bad header name"),
            HeadError::LeadingFold => {
                f.write_str("the header block starts with a continuation line")
            }
            HeadError::TooManyFields => write!(f, "more than {MAX_HEADER_FIELDS} header fields"),
            HeadError::BadContentLength { line } => {
                write!(
                    f,
                    "head line {line}: Content-Length is not a decimal number"
                )
            }
            HeadError::ConflictingContentLength { line } => {
                write!(f, "head line {line}: a second Content-Length that differs")
            }
            HeadError::UnsupportedTransferEncoding { line } => {
                write!(f, "head line {line}: Transfer-Encoding other than chunked")
            }
            HeadError::BadContentRange { line } => {
                write!(
                    f,
                    "head line {line}: Content-Range is not `bytes first-last/length`"
                )
            }
            HeadError::BadLocation { line } => write!(
                f,
                "head line {line}: Location longer than {MAX_LOCATION} bytes or not visible ASCII"
            ),
        }
    }
}

/// What the client keeps of a response head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub content_length: Option<u64>,
    /// `Transfer-Encoding: …, chunked`.
    pub chunked: bool,
    pub content_range: Option<ContentRange>,
    /// `None` when absent or malformed (a malformed ETag is no validator, not an error).
    pub etag: Option<ETag>,
    pub last_modified: Option<Text<MAX_DATE>>,
    /// Kept for 3xx answers only.
    pub location: Option<Text<MAX_LOCATION>>,
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Where the head ends in `buf`: the index just past its blank line (`\r\n\r\n` or `\n\n`,
/// a bare `\n` accepted as a line end as RFC 9112 §2.2 allows), searching from `from`.
pub(crate) fn find_end(buf: &[u8], from: usize) -> Option<usize> {
    let start = from.saturating_sub(3);
    let mut i = start;
    while i < buf.len() {
        if buf[i] == b'\n' {
            let next = &buf[i + 1..];
            if next.first() == Some(&b'\n') {
                return Some(i + 2);
            }
            if next.starts_with(b"\r\n") {
                return Some(i + 3);
            }
        }
        i += 1;
    }
    None
}

/// Parses a complete head (`head` ends with its blank line). Continuation lines (obs-fold,
/// RFC 9112 §5.2) are joined to the previous field in place, as the RFC asks of a client.
pub fn parse(head: &mut [u8]) -> Result<Head, HeadError> {
    // Unfold: a line end followed by a space or tab becomes spaces.
    let mut first_line_end = None;
    for i in 0..head.len() {
        if head[i] == b'\n' && i + 1 < head.len() && matches!(head[i + 1], b' ' | b'\t') {
            match first_line_end {
                None => return Err(HeadError::LeadingFold),
                Some(_) => {
                    head[i] = b' ';
                    if i > 0 && head[i - 1] == b'\r' {
                        head[i - 1] = b' ';
                    }
                }
            }
        } else if head[i] == b'\n' && first_line_end.is_none() {
            first_line_end = Some(i);
        }
    }
    let head: &[u8] = head;
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let status_line = lines.next().unwrap_or(b"");
    let status = status_line_code(status_line)?;
    let mut out = Head {
        status,
        content_length: None,
        chunked: false,
        content_range: None,
        etag: None,
        last_modified: None,
        location: None,
    };
    let mut fields = 0usize;
    for (i, line) in lines.enumerate() {
        let line_no = i + 2;
        if line.is_empty() {
            break;
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or(HeadError::NoColon { line: line_no })?;
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if !is_token(name) {
            return Err(HeadError::BadName { line: line_no });
        }
        fields += 1;
        if fields > MAX_HEADER_FIELDS {
            return Err(HeadError::TooManyFields);
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            for part in value.split(|&b| b == b',') {
                let n = number(trim(part)).ok_or(HeadError::BadContentLength { line: line_no })?;
                if out.content_length.is_some_and(|l| l != n) {
                    return Err(HeadError::ConflictingContentLength { line: line_no });
                }
                out.content_length = Some(n);
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            let last = value.rsplit(|&b| b == b',').next().map(trim).unwrap_or(b"");
            if !last.eq_ignore_ascii_case(b"chunked") {
                return Err(HeadError::UnsupportedTransferEncoding { line: line_no });
            }
            out.chunked = true;
        } else if name.eq_ignore_ascii_case(b"content-range") {
            out.content_range = Some(
                ContentRange::parse(value).ok_or(HeadError::BadContentRange { line: line_no })?,
            );
        } else if name.eq_ignore_ascii_case(b"etag") {
            out.etag = ETag::parse(value);
        } else if name.eq_ignore_ascii_case(b"last-modified") {
            out.last_modified = Text::new(value);
        } else if name.eq_ignore_ascii_case(b"location") && (300..400).contains(&status) {
            out.location = Some(Text::new(value).ok_or(HeadError::BadLocation { line: line_no })?);
        }
    }
    if out.chunked {
        // RFC 9112 §6.3: Transfer-Encoding overrides Content-Length.
        out.content_length = None;
    }
    Ok(out)
}

fn status_line_code(line: &[u8]) -> Result<u16, HeadError> {
    // HTTP-version SP status-code SP [reason-phrase] (RFC 9112 §4); some servers omit the
    // space after the code when the reason is empty.
    let rest = line.strip_prefix(b"HTTP/1.").ok_or(HeadError::NotHttp1)?;
    let (minor, rest) = rest.split_first().ok_or(HeadError::NotHttp1)?;
    if !minor.is_ascii_digit() {
        return Err(HeadError::NotHttp1);
    }
    let rest = rest.strip_prefix(b" ").ok_or(HeadError::NotHttp1)?;
    let code = rest.get(..3).ok_or(HeadError::BadStatus)?;
    if rest.get(3).is_some_and(|&b| b != b' ') {
        return Err(HeadError::BadStatus);
    }
    match number(code) {
        Some(n @ 100..=599) if code[0] != b'0' => Ok(n as u16),
        _ => Err(HeadError::BadStatus),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Head, HeadError> {
        let mut v = s.as_bytes().to_vec();
        parse(&mut v)
    }

    #[test]
    fn head_fields_are_read() {
        let h = p("HTTP/1.1 206 Partial Content\r\nContent-Length: 10\r\nContent-Range: bytes 5-14/15\r\nETag: \"v1-15\"\r\nLast-Modified: Wed, 01 Jan 2025 00:00:00 GMT\r\n\r\n").unwrap();
        assert_eq!(h.status, 206);
        assert_eq!(h.content_length, Some(10));
        assert_eq!(
            h.content_range,
            Some(ContentRange::Bytes {
                first: 5,
                last: 14,
                complete_length: Some(15)
            })
        );
        assert_eq!(h.etag.unwrap().as_str(), "\"v1-15\"");
        assert!(!h.etag.unwrap().is_weak());
        assert_eq!(
            h.last_modified.unwrap().as_str(),
            "Wed, 01 Jan 2025 00:00:00 GMT"
        );
    }

    #[test]
    fn weak_etags_and_folds_and_bare_lf_are_understood() {
        let h = p("HTTP/1.0 200 OK\nETag:   W/\"x\"  \nX-Long: a\n  b\ncontent-length: 3, 3\n\n")
            .unwrap();
        assert!(h.etag.unwrap().is_weak());
        assert_eq!(h.content_length, Some(3));
        let a = ETag::parse(b"\"a\"").unwrap();
        let w = ETag::parse(b"W/\"a\"").unwrap();
        assert!(a.strong_eq(&a) && !a.strong_eq(&w) && !w.strong_eq(&w));
        assert_eq!(ETag::parse(b"a"), None);
        assert_eq!(ETag::parse(b"\"a\"b\""), None);
    }

    #[test]
    fn chunked_overrides_content_length() {
        let h =
            p("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
                .unwrap();
        assert!(h.chunked);
        assert_eq!(h.content_length, None);
    }

    #[test]
    fn hostile_heads_are_refused_with_the_line() {
        assert_eq!(p("HTTP/2 200 OK\r\n\r\n"), Err(HeadError::NotHttp1));
        assert_eq!(p("ICY 200 OK\r\n\r\n"), Err(HeadError::NotHttp1));
        assert_eq!(p("HTTP/1.1 2000 OK\r\n\r\n"), Err(HeadError::BadStatus));
        assert_eq!(p("HTTP/1.1 099 OK\r\n\r\n"), Err(HeadError::BadStatus));
        assert_eq!(p("HTTP/1.1 600 OK\r\n\r\n"), Err(HeadError::BadStatus));
        assert_eq!(p("HTTP/1.1 +20 OK\r\n\r\n"), Err(HeadError::BadStatus));
        assert_eq!(
            p("HTTP/1.1 200 OK\r\nnocolon\r\n\r\n"),
            Err(HeadError::NoColon { line: 2 })
        );
        assert_eq!(
            p("HTTP/1.1 200 OK\r\nA: b\r\nBad Name: x\r\n\r\n"),
            Err(HeadError::BadName { line: 3 })
        );
        assert_eq!(
            p("HTTP/1.1 200 OK\r\n: x\r\n\r\n"),
            Err(HeadError::BadName { line: 2 })
        );
        assert_eq!(p(" HTTP/1.1 200 OK\r\n\r\n"), Err(HeadError::NotHttp1));
        assert_eq!(
            p("HTTP/1.1 200 OK\r\n folded\r\n\r\n"),
            Err(HeadError::LeadingFold)
        );
        assert_eq!(
            p("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"),
            Err(HeadError::BadContentLength { line: 2 })
        );
        assert_eq!(
            p("HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n"),
            Err(HeadError::BadContentLength { line: 2 })
        );
        assert_eq!(
            p("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Err(HeadError::ConflictingContentLength { line: 3 })
        );
        assert_eq!(
            p("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"),
            Err(HeadError::UnsupportedTransferEncoding { line: 2 })
        );
        for bad in [
            "bytes 5-4/10",
            "bytes 0-10/10",
            "bytes 0-1",
            "items 0-1/2",
            "bytes a-1/2",
            "bytes */*",
        ] {
            let s = format!("HTTP/1.1 206 OK\r\nContent-Range: {bad}\r\n\r\n");
            assert_eq!(p(&s), Err(HeadError::BadContentRange { line: 2 }), "{bad}");
        }
        let many = "X: y\r\n".repeat(MAX_HEADER_FIELDS + 1);
        assert_eq!(
            p(&format!("HTTP/1.1 200 OK\r\n{many}\r\n")),
            Err(HeadError::TooManyFields)
        );
        let loc = "a".repeat(MAX_LOCATION + 1);
        assert_eq!(
            p(&format!("HTTP/1.1 302 Found\r\nLocation: /{loc}\r\n\r\n")),
            Err(HeadError::BadLocation { line: 2 })
        );
        // On a 200 the same Location is ignored.
        assert!(p(&format!("HTTP/1.1 200 OK\r\nLocation: /{loc}\r\n\r\n")).is_ok());
    }

    #[test]
    fn head_end_is_found_across_reads() {
        let b = b"HTTP/1.1 200 OK\r\nA: b\r\n\r\nBODY";
        assert_eq!(find_end(b, 0), Some(b.len() - 4));
        assert_eq!(find_end(b, 20), Some(b.len() - 4));
        assert_eq!(find_end(b"HTTP/1.1 200 OK\n\nX", 0), Some(17));
        assert_eq!(find_end(b"HTTP/1.1 200 OK\r\n", 0), None);
    }
}
