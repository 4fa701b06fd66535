//! HTTP range and validator rules (RFC 9110 §13, §14) as pure functions: parse a `Range`
//! header against a length, compare entity tags, evaluate `If-Range`. No I/O, so every rule is
//! unit-tested here and the request handler only wires the answers to status codes.

use std::time::SystemTime;

/// What a `Range` header asks of a representation of a known length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable `Range` (absent, another unit, bad syntax): send the whole representation
    /// (RFC 9110 §14.2: a server MAY ignore a Range it does not understand).
    Whole,
    /// More than one range. We answer every multi-range request with 200 and the whole
    /// representation, like S3 and SeaweedFS (delta-and-scale.md §5.2), never multipart.
    Multiple,
    /// One satisfiable range, `start..=end` (inclusive, clamped to the length): 206.
    Single { start: u64, end: u64 },
    /// One syntactically valid range that does not overlap the representation: 416.
    Unsatisfiable,
}

/// The only range unit (RFC 9110 §14.1).
const BYTES_UNIT: &str = "bytes";

/// One `first-last`, `first-` or `-suffix` spec. Digits that do not fit in a u64 are kept as
/// `u64::MAX`: a first byte that large is beyond any length, a last byte that large is clamped.
fn parse_spec(spec: &str) -> Option<(Option<u64>, Option<u64>)> {
    let (a, b) = spec.trim().split_once('-')?;
    let num = |s: &str| -> Option<Option<u64>> {
        let s = s.trim();
        if s.is_empty() {
            return Some(None);
        }
        if !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        Some(Some(s.parse::<u64>().unwrap_or(u64::MAX)))
    };
    let first = num(a)?;
    let last = num(b)?;
    match (first, last) {
        (None, None) => None,
        (Some(f), Some(l)) if l < f => None,
        other => Some(other),
    }
}

/// Evaluates `Range` (already known to be present) against `len` bytes.
pub fn parse_range(header: &str, len: u64) -> RangeRequest {
    let Some((unit, set)) = header.trim().split_once('=') else {
        return RangeRequest::Whole;
    };
    if !unit.trim().eq_ignore_ascii_case(BYTES_UNIT) {
        return RangeRequest::Whole;
    }
    let specs: Vec<&str> = set.split(',').filter(|s| !s.trim().is_empty()).collect();
    let mut parsed = Vec::with_capacity(specs.len());
    for s in &specs {
        match parse_spec(s) {
            Some(p) => parsed.push(p),
            None => return RangeRequest::Whole,
        }
    }
    match parsed.as_slice() {
        [] => RangeRequest::Whole,
        [one] => match *one {
            (Some(first), last) => {
                if first >= len {
                    RangeRequest::Unsatisfiable
                } else {
                    let end = last.map_or(len - 1, |l| l.min(len - 1));
                    RangeRequest::Single { start: first, end }
                }
            }
            (None, Some(suffix)) => {
                if suffix == 0 || len == 0 {
                    RangeRequest::Unsatisfiable
                } else {
                    RangeRequest::Single {
                        start: len.saturating_sub(suffix),
                        end: len - 1,
                    }
                }
            }
            (None, None) => RangeRequest::Whole,
        },
        _ => RangeRequest::Multiple,
    }
}

/// One entity tag of a header list: `"abc"` or `W/"abc"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tag<'a> {
    weak: bool,
    opaque: &'a str,
}

fn parse_tag(s: &str) -> Option<Tag<'_>> {
    let s = s.trim();
    let (weak, rest) = match s.strip_prefix("W/") {
        Some(r) => (true, r),
        None => (false, s),
    };
    let opaque = rest.strip_prefix('"')?.strip_suffix('"')?;
    if opaque.contains('"') {
        return None;
    }
    Some(Tag { weak, opaque })
}

/// `If-None-Match` (weak comparison, RFC 9110 §13.1.2): true when `*` or any listed tag has the
/// same opaque value as `etag` (our quoted strong tag).
pub fn none_match(header: &str, etag: &str) -> bool {
    if header.trim() == "*" {
        return true;
    }
    let Some(ours) = parse_tag(etag) else {
        return false;
    };
    header
        .split(',')
        .filter_map(parse_tag)
        .any(|t| t.opaque == ours.opaque)
}

/// `If-Match` (strong comparison, RFC 9110 §13.1.1): true when `*` or a listed strong tag equals ours.
pub fn any_match(header: &str, etag: &str) -> bool {
    if header.trim() == "*" {
        return true;
    }
    let Some(ours) = parse_tag(etag) else {
        return false;
    };
    header
        .split(',')
        .filter_map(parse_tag)
        .any(|t| !t.weak && t.opaque == ours.opaque)
}

/// `If-Range` (RFC 9110 §13.1.5): the range may be honoured only when the validator is our
/// current strong ETag, or an HTTP date equal to our Last-Modified. Anything else (another or a
/// weak tag, another date, garbage) means: send the whole, current representation with 200.
pub fn if_range_holds(header: &str, etag: &str, last_modified: Option<SystemTime>) -> bool {
    let h = header.trim();
    if h.starts_with('"') || h.starts_with("W/") {
        return match (parse_tag(h), parse_tag(etag)) {
            (Some(t), Some(ours)) => !t.weak && t.opaque == ours.opaque,
            _ => false,
        };
    }
    match (httpdate::parse_http_date(h), last_modified) {
        (Ok(date), Some(lm)) => same_second(date, lm),
        _ => false,
    }
}

/// `If-Modified-Since`: true when the representation is not newer than the date (→ 304).
pub fn not_modified_since(header: &str, last_modified: Option<SystemTime>) -> bool {
    match (httpdate::parse_http_date(header.trim()), last_modified) {
        (Ok(date), Some(lm)) => truncate(lm) <= truncate(date),
        _ => false,
    }
}

fn truncate(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn same_second(a: SystemTime, b: SystemTime) -> bool {
    truncate(a) == truncate(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangeRequest::*;

    #[test]
    fn single_ranges_of_all_three_forms() {
        assert_eq!(
            parse_range("bytes=0-99", 1000),
            Single { start: 0, end: 99 }
        );
        assert_eq!(
            parse_range("bytes=900-", 1000),
            Single {
                start: 900,
                end: 999
            }
        );
        assert_eq!(
            parse_range("bytes=-100", 1000),
            Single {
                start: 900,
                end: 999
            }
        );
        assert_eq!(
            parse_range("bytes=-5000", 1000),
            Single { start: 0, end: 999 }
        );
        assert_eq!(
            parse_range("BYTES = 10-20 ", 1000),
            Single { start: 10, end: 20 }
        );
        // last beyond the end is clamped
        assert_eq!(
            parse_range("bytes=990-5000", 1000),
            Single {
                start: 990,
                end: 999
            }
        );
    }

    #[test]
    fn unsatisfiable_ranges_are_416() {
        assert_eq!(parse_range("bytes=1000-", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=5000-6000", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), Unsatisfiable);
        assert_eq!(parse_range("bytes=-10", 0), Unsatisfiable);
        // a first byte too large for u64 is still beyond the end
        assert_eq!(
            parse_range("bytes=99999999999999999999999999-", 1000),
            Unsatisfiable
        );
    }

    #[test]
    fn huge_last_byte_is_clamped_not_overflowed() {
        assert_eq!(
            parse_range("bytes=1-99999999999999999999999999", 10),
            Single { start: 1, end: 9 }
        );
        assert_eq!(
            parse_range("bytes=-99999999999999999999999999", 10),
            Single { start: 0, end: 9 }
        );
    }

    #[test]
    fn bad_syntax_and_other_units_are_ignored() {
        for h in [
            "bytes=abc",
            "bytes=5-2",
            "bytes=-5-10",
            "bytes=--5",
            "bytes=-",
            "bytes=1.5-2",
            "bytes=+1-2",
            "items=0-1",
            "bytes",
            "bytes=",
            "",
            "bytes=0-1, x",
        ] {
            assert_eq!(parse_range(h, 1000), Whole, "{h:?}");
        }
    }

    #[test]
    fn several_ranges_are_multiple() {
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), Multiple);
        assert_eq!(parse_range("bytes=0-1, -5", 1000), Multiple);
        // a single range with stray commas is still single
        assert_eq!(parse_range("bytes=0-1,", 1000), Single { start: 0, end: 1 });
    }

    #[test]
    fn entity_tag_comparisons() {
        let ours = "\"abc\"";
        assert!(none_match("\"abc\"", ours));
        assert!(none_match("W/\"abc\"", ours));
        assert!(none_match("\"x\", \"abc\"", ours));
        assert!(none_match("*", ours));
        assert!(!none_match("\"abd\"", ours));
        assert!(!none_match("abc", ours));
        assert!(any_match("\"abc\"", ours));
        assert!(!any_match("W/\"abc\"", ours));
        assert!(!any_match("\"x\"", ours));
    }

    #[test]
    fn if_range_needs_our_strong_tag_or_exact_date() {
        let lm = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        let ours = "\"abc\"";
        assert!(if_range_holds("\"abc\"", ours, Some(lm)));
        assert!(!if_range_holds("\"old\"", ours, Some(lm)));
        assert!(!if_range_holds("W/\"abc\"", ours, Some(lm)));
        assert!(if_range_holds(
            "Sun, 06 Nov 1994 08:49:37 GMT",
            ours,
            Some(lm)
        ));
        assert!(!if_range_holds(
            "Sun, 06 Nov 1994 08:49:36 GMT",
            ours,
            Some(lm)
        ));
        assert!(!if_range_holds("garbage", ours, Some(lm)));
        assert!(!if_range_holds("Sun, 06 Nov 1994 08:49:37 GMT", ours, None));
    }

    #[test]
    fn if_modified_since_compares_whole_seconds() {
        let lm = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap()
            + std::time::Duration::from_millis(500);
        assert!(not_modified_since(
            "Sun, 06 Nov 1994 08:49:37 GMT",
            Some(lm)
        ));
        assert!(!not_modified_since(
            "Sun, 06 Nov 1994 08:49:36 GMT",
            Some(lm)
        ));
        assert!(!not_modified_since("nonsense", Some(lm)));
    }
}
