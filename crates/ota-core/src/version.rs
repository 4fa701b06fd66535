//! Version policies: `none` (ADF default), `newer` (ADF's strict `vX.Y.Z`, esp-adf `ota_proc_default.c` `ota_get_version_number`)
//! and `semver` (semantic versions, also ordering `git describe` strings).
//!
//! [`check`] decides whether an incoming version may replace the current one; it never
//! allocates and never panics on any input string.

use core::cmp::Ordering;
use core::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum VersionPolicy {
    #[default]
    None,
    Newer,
    Semver,
}

/// Outcome of applying a policy to (current, incoming).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionVerdict {
    Accept,
    /// Incoming is not newer than current (ADF `NO_HIGHER_VERSION`).
    NotNewer,
    /// Incoming version does not parse under the policy (ADF `ERROR_VERSION`).
    InvalidIncoming,
}

impl VersionPolicy {
    /// All policies, in the order of their names.
    pub const ALL: [VersionPolicy; 3] = [
        VersionPolicy::None,
        VersionPolicy::Newer,
        VersionPolicy::Semver,
    ];

    /// From the config/CLI name: exactly `none`, `newer` or `semver`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "none" => Some(VersionPolicy::None),
            "newer" => Some(VersionPolicy::Newer),
            "semver" => Some(VersionPolicy::Semver),
            _ => None,
        }
    }

    /// The config/CLI name.
    pub fn name(self) -> &'static str {
        match self {
            VersionPolicy::None => "none",
            VersionPolicy::Newer => "newer",
            VersionPolicy::Semver => "semver",
        }
    }
}

impl fmt::Display for VersionPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for VersionVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VersionVerdict::Accept => "accepted",
            VersionVerdict::NotNewer => {
                "incoming version is the same as or lower than the current one"
            }
            VersionVerdict::InvalidIncoming => {
                "incoming version does not parse under the version policy"
            }
        })
    }
}

/// Longest string `ota_get_version_number` accepts (`strlen > 32` → −1, esp-adf `ota_proc_default.c` `ota_get_version_number`).
pub const ADF_VERSION_MAX_LEN: usize = 32;
/// Each of the three components must be ≤ 255 (`ota_proc_default.c` `ota_get_version_number`).
const ADF_COMPONENT_MAX: u32 = 255;
/// Number of components ADF requires (`cnt` 2, 1, 0 and then −1, `ota_proc_default.c` `ota_get_version_number`).
const ADF_COMPONENTS: u32 = 3;

/// ADF's `ota_get_version_number` (esp-adf `ota_proc_default.c` `ota_get_version_number`): `Some(major<<16 | minor<<8 | patch)`
/// for `vX.Y.Z` / `VX.Y.Z`, `None` where ADF returns −1.
///
/// C semantics kept: the string ends at the first NUL; more than 32 bytes fails; `strtok(".")`
/// skips empty tokens (so `v1..2.3` and `.v1.2.3.` pass); the first token must start with v/V
/// and the rest of it (possibly empty, then 0) is the major number; every component must be all
/// ASCII digits and ≤ 255 (leading zeros fine); exactly three components.
pub fn adf_version_number(s: &str) -> Option<u32> {
    let s = s.split('\0').next().unwrap_or("");
    if s.len() > ADF_VERSION_MAX_LEN {
        return None;
    }
    let mut tokens = s.split('.').filter(|t| !t.is_empty());
    let first = tokens.next()?;
    let major = first.strip_prefix(['v', 'V'])?;
    let mut value = 0u32;
    let mut count = 0u32;
    for comp in core::iter::once(major).chain(tokens) {
        count += 1;
        if count > ADF_COMPONENTS {
            return None;
        }
        let n = adf_atoi(comp)?;
        value |= n << ((ADF_COMPONENTS - count) * 8);
    }
    (count == ADF_COMPONENTS).then_some(value)
}

/// An all-digit component's value if ≤ 255 (`atoi` after the digit check; saturating like the
/// device's 32-bit `strtol`, so huge numbers fail instead of wrapping).
fn adf_atoi(comp: &str) -> Option<u32> {
    let mut n = 0u32;
    for b in comp.bytes() {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.saturating_mul(10).saturating_add(u32::from(b - b'0'));
    }
    (n <= ADF_COMPONENT_MAX).then_some(n)
}

/// Minimum / maximum length of the abbreviated hash in a `git describe` suffix (`-g` + hex).
const GIT_HASH_MIN: usize = 4;
const GIT_HASH_MAX: usize = 64;
/// `git describe --dirty` marker.
const GIT_DIRTY: &str = "dirty";

/// A parsed semantic / `git describe` version, borrowing the input. Equality is precedence
/// equality (`Ord`), not string equality.
#[derive(Clone, Copy, Debug)]
struct SemVer<'a> {
    core: [u64; 3],
    /// Semver pre-release (dot-separated identifiers), if any.
    pre: Option<&'a str>,
    /// `git describe` commits after the tag (`-N-gHASH`), 0 if none.
    commits: u64,
    /// `-dirty` suffix.
    dirty: bool,
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn parse_num(s: &str) -> Option<u64> {
    if !is_digits(s) {
        return None;
    }
    s.parse().ok()
}

fn is_git_hash(s: &str) -> bool {
    s.strip_prefix('g').is_some_and(|h| {
        (GIT_HASH_MIN..=GIT_HASH_MAX).contains(&h.len()) && h.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

fn valid_pre_release(pre: &str) -> bool {
    pre.split('.')
        .all(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
}

impl<'a> SemVer<'a> {
    fn parse(s: &'a str) -> Option<SemVer<'a>> {
        let s = s.strip_prefix(['v', 'V']).unwrap_or(s);
        // `+build` metadata is ignored (semver §10).
        let s = s.split('+').next().unwrap_or("");
        let (core_str, mut suffix) = match s.find('-') {
            Some(i) => (s.get(..i)?, s.get(i + 1..)),
            None => (s, None),
        };
        let mut core = [0u64; 3];
        let mut parts = core_str.split('.');
        for (i, part) in parts.by_ref().take(3).enumerate() {
            // Missing MINOR/PATCH are 0, but a present part must be a number.
            core[i] = parse_num(part)?;
        }
        if parts.next().is_some() {
            return None;
        }
        let mut dirty = false;
        let mut described = false;
        let mut commits = 0;
        if let Some(mut rest) = suffix {
            // Peel `-dirty`, then `-N-gHASH`, off the end; what is left is a pre-release.
            if rest == GIT_DIRTY {
                dirty = true;
                rest = "";
            } else if let Some(r) = rest
                .strip_suffix(GIT_DIRTY)
                .and_then(|r| r.strip_suffix('-'))
            {
                dirty = true;
                rest = r;
            }
            let mut it = rest.rsplitn(3, '-');
            if let (Some(hash), Some(n)) = (it.next(), it.next()) {
                if let (true, Some(n)) = (is_git_hash(hash), parse_num(n)) {
                    described = true;
                    commits = n;
                    rest = it.next().unwrap_or("");
                }
            }
            suffix = if !rest.is_empty() {
                if !valid_pre_release(rest) {
                    return None;
                }
                Some(rest)
            } else if dirty || described {
                None
            } else {
                // A bare trailing '-' (`1.2.3-`).
                return None;
            };
        }
        Some(SemVer {
            core,
            pre: suffix,
            commits,
            dirty,
        })
    }
}

/// Semver pre-release precedence (semver §11.4): identifiers left to right; numeric < alphanumeric;
/// numbers by value, others by ASCII; a shorter list that is a prefix is lower.
fn cmp_pre(a: &str, b: &str) -> Ordering {
    let mut ia = a.split('.');
    let mut ib = b.split('.');
    loop {
        match (ia.next(), ib.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let o = match (parse_num(x), parse_num(y)) {
                    (Some(nx), Some(ny)) => nx.cmp(&ny),
                    (Some(_), None) => Ordering::Less,
                    (None, Some(_)) => Ordering::Greater,
                    // Alphanumeric identifiers by ASCII; all-digit ones too long for u64 by
                    // length first (semver forbids their leading zeros).
                    (None, None) if is_digits(x) && is_digits(y) => {
                        x.len().cmp(&y.len()).then_with(|| x.cmp(y))
                    }
                    (None, None) => x.cmp(y),
                };
                if o != Ordering::Equal {
                    return o;
                }
            }
        }
    }
}

impl Ord for SemVer<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.core
            .cmp(&other.core)
            .then_with(|| match (self.pre, other.pre) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(a), Some(b)) => cmp_pre(a, b),
            })
            .then(self.commits.cmp(&other.commits))
            .then(self.dirty.cmp(&other.dirty))
    }
}

impl PartialEq for SemVer<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for SemVer<'_> {}

impl PartialOrd for SemVer<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Whether `s` parses for [`compare_semver`].
pub fn semver_parses(s: &str) -> bool {
    SemVer::parse(s).is_some()
}

/// Semantic-version order that also orders `git describe` output.
///
/// Grammar: optional `v`/`V`; `MAJOR[.MINOR[.PATCH]]` (decimal, missing parts 0, at most
/// three); then optionally `-PRE` (semver pre-release, lower than the release), then optionally
/// `-N-gHASH` (N commits *after* that version; the hash is not compared), then optionally
/// `-dirty` (after the same clean version); `+build` is ignored. So
/// `v2.2` < `v2.2-237-g6532b89f` < `v2.2-252-g62edbd26` < `v2.2-252-g62edbd26-dirty` < `v2.3-rc1` < `v2.3`.
/// `None` when either string does not parse (e.g. no digit after the optional `v`).
pub fn compare_semver(a: &str, b: &str) -> Option<Ordering> {
    Some(SemVer::parse(a)?.cmp(&SemVer::parse(b)?))
}

/// Apply `policy` to the running/current version and the incoming one.
///
/// * `None`: always [`VersionVerdict::Accept`] (ADF default, no version check).
/// * `Newer` (ADF, esp-adf `ota_proc_default.c` `ota_get_version_number`): incoming must parse under [`adf_version_number`]
///   else `InvalidIncoming`; a current version that is absent or does not parse counts as −1
///   and loses; `incoming <= current` → `NotNewer`.
/// * `Semver`: incoming must parse under [`compare_semver`]'s grammar else `InvalidIncoming`;
///   absent/unparseable current → `Accept`; `incoming <= current` → `NotNewer`.
pub fn check(policy: VersionPolicy, current: Option<&str>, incoming: &str) -> VersionVerdict {
    match policy {
        VersionPolicy::None => VersionVerdict::Accept,
        VersionPolicy::Newer => {
            let Some(inc) = adf_version_number(incoming) else {
                return VersionVerdict::InvalidIncoming;
            };
            match current.and_then(adf_version_number) {
                Some(cur) if inc <= cur => VersionVerdict::NotNewer,
                _ => VersionVerdict::Accept,
            }
        }
        VersionPolicy::Semver => {
            let Some(inc) = SemVer::parse(incoming) else {
                return VersionVerdict::InvalidIncoming;
            };
            match current.and_then(SemVer::parse) {
                Some(cur) if inc <= cur => VersionVerdict::NotNewer,
                _ => VersionVerdict::Accept,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::{Equal, Greater, Less};

    #[test]
    fn adf_version_number_matches_vector_table() {
        // esp-adf `ota_proc_default.c` `ota_get_version_number` (None = −1).
        let table: [(&str, Option<u32>); 22] = [
            ("v1.2.3", Some(0x010203)),
            ("V1.2.3", Some(0x010203)),
            ("v0.0.0", Some(0)),
            ("v255.255.255", Some(0xFFFFFF)),
            ("v256.0.0", None),
            ("v1.2", None),
            ("v1.2.3.4", None),
            ("1.2.3", None),
            ("v1.2.3-rc1", None),
            ("v01.002.003", Some(0x010203)),
            ("v1..2.3", Some(0x010203)),
            ("v1.2.3.", Some(0x010203)),
            (".v1.2.3", Some(0x010203)),
            ("v.1.2", Some(0x000102)),
            ("v", None),
            ("", None),
            (" v1.2.3", None),
            ("v2.2-252-g62edbd26-dirty", None),
            ("v1.0", None),
            ("0.5.0", None),
            ("...", None),
            ("v1.2.255", Some(0x0102FF)),
        ];
        for (s, want) in table {
            assert_eq!(adf_version_number(s), want, "{s:?}");
        }
    }

    #[test]
    fn adf_version_number_c_string_edges() {
        // strlen > 32 fails; exactly 32 passes.
        let ok32 = "v1.2.00000000000000000000000003"; // 31 chars
        assert_eq!(ok32.len(), 31);
        assert_eq!(adf_version_number(ok32), Some(0x010203));
        let s32 = "v1.2.000000000000000000000000003";
        assert_eq!(s32.len(), 32);
        assert_eq!(adf_version_number(s32), Some(0x010203));
        let s33 = "v1.2.0000000000000000000000000003";
        assert_eq!(s33.len(), 33);
        assert_eq!(adf_version_number(s33), None);
        // The C string ends at NUL.
        assert_eq!(adf_version_number("v1.2.3\0garbage"), Some(0x010203));
        // Huge components fail rather than wrap (4294967297 would be 1 if wrapped to 32 bits).
        assert_eq!(adf_version_number("v4294967297.0.0"), None);
        assert_eq!(adf_version_number("v1.2.3a"), None);
        assert_eq!(adf_version_number("v1.+2.3"), None);
        assert_eq!(adf_version_number("v1.-2.3"), None);
        assert_eq!(adf_version_number("vé.1.2"), None);
        assert_eq!(adf_version_number("v1.2.3.."), Some(0x010203));
    }

    #[test]
    fn git_describe_counts_commits_after_base() {
        let a = "v2.2-252-g62edbd26-dirty";
        let b = "v2.2-237-g6532b89f";
        assert_eq!(compare_semver(a, b), Some(Greater));
        assert_eq!(compare_semver(b, a), Some(Less));
        assert_eq!(compare_semver(b, "v2.2"), Some(Greater));
        assert_eq!(compare_semver("v2.2", b), Some(Less));
        assert_eq!(compare_semver(a, "v2.2"), Some(Greater));
        assert_eq!(compare_semver("v2.2", "v2.2.0"), Some(Equal));
        assert_eq!(compare_semver(a, a), Some(Equal));
        assert_eq!(compare_semver(b, b), Some(Equal));
        assert_eq!(compare_semver(b, "v2.3"), Some(Less));
    }

    #[test]
    fn git_describe_dirty_is_after_clean() {
        assert_eq!(
            compare_semver("v2.2-5-gabcdef0-dirty", "v2.2-5-gabcdef0"),
            Some(Greater)
        );
        assert_eq!(
            compare_semver("v2.2-5-gabcdef0", "v2.2-5-gabcdef0-dirty"),
            Some(Less)
        );
        assert_eq!(compare_semver("v2.2-dirty", "v2.2"), Some(Greater));
        assert_eq!(compare_semver("v2.2-dirty", "v2.2-1-g1234567"), Some(Less));
        assert_eq!(compare_semver("v2.2-0-g1234567", "v2.2"), Some(Equal));
        // The hash itself is not ordered.
        assert_eq!(
            compare_semver("v2.2-5-gaaaaaaa", "v2.2-5-gbbbbbbb"),
            Some(Equal)
        );
        // Describe on a pre-release tag: after rc1, still before the release.
        assert_eq!(
            compare_semver("v3.0.0-rc1-4-gdeadbeef", "v3.0.0-rc1"),
            Some(Greater)
        );
        assert_eq!(
            compare_semver("v3.0.0-rc1-4-gdeadbeef", "v3.0.0"),
            Some(Less)
        );
        assert_eq!(
            compare_semver("v3.0.0-rc1-dirty", "v3.0.0-rc1"),
            Some(Greater)
        );
    }

    #[test]
    fn semver_prerelease_precedence() {
        // semver §11 example chain.
        let chain = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "2.0.0",
            "2.1.0",
            "2.1.1",
        ];
        for w in chain.windows(2) {
            assert_eq!(
                compare_semver(w[0], w[1]),
                Some(Less),
                "{} < {}",
                w[0],
                w[1]
            );
            assert_eq!(
                compare_semver(w[1], w[0]),
                Some(Greater),
                "{} > {}",
                w[1],
                w[0]
            );
        }
        assert_eq!(compare_semver("1.0.0+build.5", "1.0.0"), Some(Equal));
        assert_eq!(
            compare_semver("v1.0.0-rc.1+exp", "V1.0.0-rc.1"),
            Some(Equal)
        );
        assert_eq!(compare_semver("1.10.0", "1.9.9"), Some(Greater));
        assert_eq!(compare_semver("1", "0.9"), Some(Greater));
        assert_eq!(
            compare_semver(
                "1.0.0-99999999999999999999999",
                "1.0.0-100000000000000000000000"
            ),
            Some(Less)
        );
    }

    #[test]
    fn semver_rejects_unparseable() {
        for bad in [
            "",
            "v",
            "V",
            "abc",
            "v.1",
            "1.2.3.4",
            "1.2.x",
            "1..2",
            "1.2.3-",
            "1.2.3-a..b",
            "1.2.3-a_b",
            " 1.0",
            "vv1",
        ] {
            assert!(!semver_parses(bad), "{bad:?} should not parse");
            assert_eq!(compare_semver(bad, "1.0.0"), None, "{bad:?}");
            assert_eq!(compare_semver("1.0.0", bad), None, "{bad:?}");
        }
        for good in [
            "0",
            "v1",
            "1.2",
            "1.2.3",
            "1.2.3-rc1",
            "1.2.3-dirty",
            "v1.2-0-gabcd",
            "1.2.3+x",
        ] {
            assert!(semver_parses(good), "{good:?} should parse");
        }
    }

    #[test]
    fn check_policy_none_accepts_everything() {
        assert_eq!(
            check(VersionPolicy::None, Some("v9.9.9"), "garbage"),
            VersionVerdict::Accept
        );
        assert_eq!(check(VersionPolicy::None, None, ""), VersionVerdict::Accept);
    }

    #[test]
    fn check_policy_newer_is_adf_rule() {
        use VersionVerdict::*;
        let p = VersionPolicy::Newer;
        assert_eq!(check(p, Some("v1.0.0"), "v1.0.1"), Accept);
        assert_eq!(check(p, Some("v1.0.1"), "v1.0.1"), NotNewer);
        assert_eq!(check(p, Some("v1.1.0"), "v1.0.9"), NotNewer);
        assert_eq!(check(p, Some("v1.0.0"), "v1.0"), InvalidIncoming);
        assert_eq!(check(p, None, "1.2.3"), InvalidIncoming);
        // Unparseable or absent current (−1) loses against any valid incoming, even v0.0.0.
        assert_eq!(check(p, Some("v2.2-252-g62edbd26-dirty"), "v0.0.0"), Accept);
        assert_eq!(check(p, None, "v0.0.0"), Accept);
    }

    #[test]
    fn check_policy_semver() {
        use VersionVerdict::*;
        let p = VersionPolicy::Semver;
        assert_eq!(
            check(p, Some("v2.2-237-g6532b89f"), "v2.2-252-g62edbd26-dirty"),
            Accept
        );
        assert_eq!(
            check(p, Some("v2.2-252-g62edbd26-dirty"), "v2.2-237-g6532b89f"),
            NotNewer
        );
        assert_eq!(check(p, Some("1.0.0"), "1.0.0"), NotNewer);
        assert_eq!(check(p, Some("1.0.0"), "1.0.0-rc.1"), NotNewer);
        assert_eq!(check(p, Some("1.0.0-rc.1"), "1.0.0"), Accept);
        assert_eq!(check(p, Some("1.0.0"), "nonsense"), InvalidIncoming);
        assert_eq!(check(p, Some("nonsense"), "0.0.1"), Accept);
        assert_eq!(check(p, None, "0.0.1"), Accept);
    }

    #[test]
    fn policy_names_roundtrip() {
        for p in VersionPolicy::ALL {
            assert_eq!(VersionPolicy::from_name(p.name()), Some(p));
        }
        assert_eq!(
            VersionPolicy::from_name("newer"),
            Some(VersionPolicy::Newer)
        );
        assert_eq!(VersionPolicy::from_name("Semver"), None);
        assert_eq!(VersionPolicy::from_name(""), None);
        assert_eq!(VersionPolicy::default(), VersionPolicy::None);
    }
}
