//! `http://host[:port]/path?query` URLs, parsed without allocating (the parts borrow the text).

use core::fmt;

/// Longest URL we request (the std client's bound, `MAX_URI_LEN` in ota-service).
pub const MAX_URL_LEN: usize = 8 * 1024;
/// Default port of `http://` (RFC 9110 §4.2.1).
pub const HTTP_PORT: u16 = 80;
/// Default port of `https://` (RFC 9110 §4.2.2).
pub const HTTPS_PORT: u16 = 443;

/// A parsed `http://` URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Url<'a> {
    /// Host name or IPv4 literal, or an IPv6 literal without its brackets.
    pub host: &'a str,
    pub port: u16,
    /// Path and query (without the fragment); `/` when the URL has none.
    pub target: &'a str,
    /// `https://`: the connection is opened with [`crate::http::Connect::connect_tls`].
    pub tls: bool,
}

/// Why a URL was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UrlError {
    /// Longer than [`MAX_URL_LEN`].
    TooLong { len: usize },
    /// A control character (or a space) at this byte offset.
    ControlChar { at: usize },
    /// Neither `http://` nor `https://`.
    Scheme,
    /// `user:password@` is not supported by this client.
    UserInfo,
    /// No host between `http://` and the path.
    EmptyHost,
    /// `[` without `]`, or something after `]` other than `:port`.
    BadIpv6,
    /// The port is not a number from 1 to 65535.
    BadPort,
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlError::TooLong { len } => {
                write!(f, "the URL is {len} bytes long, more than {MAX_URL_LEN}")
            }
            UrlError::ControlChar { at } => {
                write!(f, "control character or space at byte {at} of the URL")
            }
            UrlError::Scheme => f.write_str("not an http:// URL"),
            UrlError::UserInfo => f.write_str("user:password@ in the URL is not supported"),
            UrlError::EmptyHost => f.write_str("the URL has no host"),
            UrlError::BadIpv6 => f.write_str("bad [IPv6] host in the URL"),
            UrlError::BadPort => f.write_str("the URL's port is not a number from 1 to 65535"),
        }
    }
}

impl core::error::Error for UrlError {}

impl<'a> Url<'a> {
    /// Parses an absolute `http://` URL (scheme case-insensitive).
    pub fn parse(s: &'a str) -> Result<Url<'a>, UrlError> {
        if s.len() > MAX_URL_LEN {
            return Err(UrlError::TooLong { len: s.len() });
        }
        if let Some(at) = s.bytes().position(|b| b <= b' ' || b == 0x7f) {
            return Err(UrlError::ControlChar { at });
        }
        const HTTP: &str = "http://";
        const HTTPS: &str = "https://";
        let (rest, tls) = match (s.get(..HTTP.len()), s.get(..HTTPS.len())) {
            (Some(p), _) if p.eq_ignore_ascii_case(HTTP) => (&s[HTTP.len()..], false),
            (_, Some(p)) if p.eq_ignore_ascii_case(HTTPS) => (&s[HTTPS.len()..], true),
            _ => return Err(UrlError::Scheme),
        };
        let rest = rest.split('#').next().unwrap_or("");
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, target) = rest.split_at(end);
        if authority.contains('@') {
            return Err(UrlError::UserInfo);
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (addr, after) = v6.split_once(']').ok_or(UrlError::BadIpv6)?;
            if addr.is_empty()
                || !addr
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
            {
                return Err(UrlError::BadIpv6);
            }
            match after {
                "" => (addr, None),
                p => (addr, Some(p.strip_prefix(':').ok_or(UrlError::BadIpv6)?)),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(UrlError::EmptyHost);
        }
        let port = match port {
            None | Some("") if tls => HTTPS_PORT,
            None | Some("") => HTTP_PORT,
            Some(p) => {
                if p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(UrlError::BadPort);
                }
                match p.parse::<u16>() {
                    Ok(0) | Err(_) => return Err(UrlError::BadPort),
                    Ok(n) => n,
                }
            }
        };
        let target = if target.is_empty() { "/" } else { target };
        Ok(Url {
            host,
            port,
            target,
            tls,
        })
    }

    /// Whether the host is an IPv6 literal (written in brackets in `Host`).
    pub fn is_ipv6(&self) -> bool {
        self.host.contains(':')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parts_are_found() {
        let u = Url::parse("HTTP://10.0.2.2:8080/fw/app.bin?x=1#frag").unwrap();
        assert_eq!(
            (u.host, u.port, u.target),
            ("10.0.2.2", 8080, "/fw/app.bin?x=1")
        );
        let u = Url::parse("http://host.ota").unwrap();
        assert_eq!((u.host, u.port, u.target), ("host.ota", 80, "/"));
        let u = Url::parse("http://h?q").unwrap();
        assert_eq!(u.target, "?q");
        let u = Url::parse("http://[::1]:81/a").unwrap();
        assert_eq!((u.host, u.port, u.is_ipv6()), ("::1", 81, true));
    }

    #[test]
    fn bad_urls_are_refused_with_the_reason() {
        let u = Url::parse("HTTPS://h/x").unwrap();
        assert_eq!(
            (u.host, u.port, u.target, u.tls),
            ("h", HTTPS_PORT, "/x", true)
        );
        assert!(!Url::parse("http://h/").unwrap().tls);
        assert_eq!(Url::parse("ftp://h/"), Err(UrlError::Scheme));
        assert_eq!(Url::parse("ftp://h/"), Err(UrlError::Scheme));
        assert_eq!(Url::parse("http://"), Err(UrlError::EmptyHost));
        assert_eq!(Url::parse("http:///x"), Err(UrlError::EmptyHost));
        assert_eq!(Url::parse("http://h:0/"), Err(UrlError::BadPort));
        assert_eq!(Url::parse("http://h:65536/"), Err(UrlError::BadPort));
        assert_eq!(Url::parse("http://h:12a/"), Err(UrlError::BadPort));
        assert_eq!(Url::parse("http://u:p@h/"), Err(UrlError::UserInfo));
        assert_eq!(Url::parse("http://[::1/"), Err(UrlError::BadIpv6));
        assert_eq!(
            Url::parse("http://h/a b"),
            Err(UrlError::ControlChar { at: 10 })
        );
        assert_eq!(
            Url::parse("http://h/\r\nX: y"),
            Err(UrlError::ControlChar { at: 9 })
        );
        let long = "http://h/".to_string() + &"a".repeat(MAX_URL_LEN);
        assert!(matches!(Url::parse(&long), Err(UrlError::TooLong { .. })));
    }
}
