//! One download path for every item (app, data, catalogue): open with retries and backoff on
//! the run's clock, read with reconnects that ask again from the byte reached (`Range`,
//! `If-Range` with the validator seen first), notice a server that starts the file over, check
//! the bytes as they stream, and report resumes and restarts as typed events.

use ota_core::resume::Validator;

use super::source_error;
use crate::io::{Body, Opened, Request};
use crate::prelude::*;
use crate::service::{Env, Event, ItemError, ResumeFrom, StartOverWhy};
use crate::source::{
    duration_ms, RetryPolicy, SourceError, SourceOptions, HTTP_RANGE_NOT_SATISFIABLE,
};

/// Open `uri` at `start`, trying again after transient failures while `used < retries`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn open_with_retries(
    uri: &str,
    start: u64,
    if_range: Option<&str>,
    if_match: Option<&str>,
    opts: &SourceOptions,
    retry: RetryPolicy,
    used: &mut u32,
    env: &mut Env<'_>,
    tag: &'static str,
) -> Result<Opened, SourceError> {
    loop {
        let req = Request {
            uri,
            start,
            if_range,
            if_match,
            opts,
        };
        match env.open(req).await {
            Ok(r) => return Ok(r),
            Err(e) if e.is_transient() && *used < retry.retries => {
                *used += 1;
                backoff(env, &e, *used, retry, start, tag).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Log the retry and wait its backoff on the run's clock.
pub(crate) async fn backoff(
    env: &mut Env<'_>,
    e: &SourceError,
    n: u32,
    retry: RetryPolicy,
    at: u64,
    tag: &'static str,
) {
    let d = retry.delay(n);
    env.warn(
        tag,
        format!(
            "{}; retry {} of {} in {} ms, from byte {}",
            e,
            n,
            retry.retries,
            d.as_millis(),
            at
        ),
    );
    env.sleep_ms(duration_ms(d)).await;
}

/// The answer to a request for the rest of a file a resume record describes.
pub(crate) enum RestOf {
    /// A 206 from the requested byte, for the same file: continue with it.
    Continue(Fetch),
    /// The server sent the whole file (Range ignored, or the file changed): start over with it.
    FromZero(Fetch),
    /// No usable answer (416, or a 206 for another file): start over with a new request.
    StartOver,
}

/// Ask for the file from byte `at` with `If-Range: validator` (a resume record's), within the
/// retry policy; `total`: the file's length when something (a catalogue) says what it must be.
/// Logs and emits the start-over cases. Errors: the request failed (after the retries).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn open_rest(
    spec: FetchSpec<'_>,
    opts: &SourceOptions,
    at: u64,
    validator: Validator,
    total: Option<u64>,
    used: &mut u32,
    env: &mut Env<'_>,
) -> Result<RestOf, SourceError> {
    let opened = open_with_retries(
        spec.uri,
        at,
        Some(validator.as_str()),
        None,
        opts,
        spec.retry,
        used,
        env,
        spec.tag,
    )
    .await;
    let r = match opened {
        Ok(r) => r,
        Err(
            SourceError::HttpStatus {
                status: HTTP_RANGE_NOT_SATISFIABLE,
                ..
            }
            | SourceError::RangeNotSatisfiable { .. },
        ) => {
            env.warn(
                spec.tag,
                format!("The server has no byte {at}: starting over from byte 0"),
            );
            env.emit(Event::StartOver {
                id: spec.id,
                at,
                why: StartOverWhy::RangeNotSatisfiable,
            });
            return Ok(RestOf::StartOver);
        }
        Err(e) => return Err(e),
    };
    let mut fetch = Fetch::new(spec, opts.clone(), r, at, Some(validator), *used);
    if !fetch.honoured {
        env.warn(
            spec.tag,
            "The server answered 200 to the Range request (Range not supported, or the file changed): starting over from byte 0",
        );
        let why = match fetch.validator {
            Some(seen) if seen != validator => StartOverWhy::FileChanged,
            _ => StartOverWhy::RangeIgnored,
        };
        env.emit(Event::StartOver {
            id: spec.id,
            at,
            why,
        });
        return Ok(RestOf::FromZero(fetch));
    }
    let other_length = matches!((total, fetch.total), (Some(want), Some(got)) if want != got);
    if fetch.changed || other_length {
        env.warn(
            spec.tag,
            "The file changed since the download started: starting over from byte 0",
        );
        env.emit(Event::StartOver {
            id: spec.id,
            at,
            why: StartOverWhy::FileChanged,
        });
        return Ok(RestOf::StartOver);
    }
    fetch.used = *used;
    Ok(RestOf::Continue(fetch))
}

/// What [`Fetch::read`] got.
pub(crate) enum Next {
    Data(usize),
    /// The source ended (or has nothing after the current byte).
    End,
    /// The server now sends the file from byte 0 (it ignored `Range`, or the file changed).
    Restart,
}

/// A download that reconnects: after a network failure it asks again from the byte where it
/// stopped (`Range`, `If-Range` with the validator seen first), within the retry policy.
/// Used by every item (app, data, catalogue).
pub(crate) struct Fetch {
    pub(crate) uri: String,
    /// The item's index in the list (for events).
    pub(crate) id: usize,
    /// The tag of its log lines.
    pub(crate) tag: &'static str,
    pub(crate) opts: SourceOptions,
    pub(crate) retry: RetryPolicy,
    /// Retries used so far by this item.
    pub(crate) used: u32,
    source: Box<dyn Body>,
    /// File offset of the next byte `source` yields.
    pub(crate) pos: u64,
    pub(crate) validator: Option<Validator>,
    /// Length of the whole file, when known.
    pub(crate) total: Option<u64>,
    /// The last answer honoured the requested start.
    pub(crate) honoured: bool,
    /// The last answer was a 206 whose validator or length shows another file.
    pub(crate) changed: bool,
    /// How many times the server started the file over from byte 0.
    pub(crate) restarts: u32,
    /// Checks the bytes as they stream (the catalogue's size and SHA-256).
    pub(crate) check: Option<Box<dyn StreamCheck>>,
}

pub(crate) fn validator_of(r: &Opened) -> Option<Validator> {
    r.validator().and_then(|(k, v)| Validator::new(k, v))
}

/// What a download's bytes must be, checked as they stream (the catalogue item checks size and
/// SHA-256 this way). Errors are the detail of a [`SourceError::Mismatch`].
pub trait StreamCheck {
    /// The download (re)starts at byte 0; `total` is the whole file's length, when known.
    fn restart(&mut self, total: Option<u64>) -> Result<(), String>;
    /// The next bytes of the file.
    fn feed(&mut self, bytes: &[u8]) -> Result<(), String>;
    /// The stream ended: were all the bytes there, and the right ones?
    fn finish(&mut self) -> Result<(), String>;
}

/// Where a [`Fetch`] starts: an item's settings.
#[derive(Clone, Copy)]
pub(crate) struct FetchSpec<'a> {
    pub(crate) uri: &'a str,
    pub(crate) id: usize,
    pub(crate) tag: &'static str,
    pub(crate) retry: RetryPolicy,
}

impl Fetch {
    /// Wrap an answer to a request for the bytes from `start`, made with `known` as `If-Range`.
    pub(crate) fn new(
        spec: FetchSpec<'_>,
        opts: SourceOptions,
        r: Opened,
        start: u64,
        known: Option<Validator>,
        used: u32,
    ) -> Fetch {
        let seen = validator_of(&r);
        let mut fetch = Fetch {
            uri: spec.uri.to_string(),
            id: spec.id,
            tag: spec.tag,
            opts,
            retry: spec.retry,
            used,
            source: r.body,
            pos: 0,
            validator: seen,
            total: r.total_length,
            honoured: r.honoured,
            changed: false,
            restarts: 0,
            check: None,
        };
        if r.honoured && start > 0 {
            fetch.pos = start;
            // A 206 for a file other than the one we started: the server ignored If-Range.
            fetch.changed = matches!((known, seen), (Some(k), Some(s))
                if k.kind() == s.kind() && k.as_str() != s.as_str());
            fetch.validator = known.or(seen);
        }
        fetch
    }

    /// The whole file (with `If-Match: if_match` when given), retried on transient failures.
    pub(crate) async fn open(
        spec: FetchSpec<'_>,
        opts: SourceOptions,
        if_match: Option<&str>,
        used: &mut u32,
        env: &mut Env<'_>,
    ) -> Result<Fetch, SourceError> {
        let r = open_with_retries(
            spec.uri, 0, None, if_match, &opts, spec.retry, used, env, spec.tag,
        )
        .await?;
        Ok(Fetch::new(spec, opts, r, 0, None, *used))
    }

    /// Check the bytes with `check` from now on (the fetch is at byte 0).
    pub(crate) fn with_check(
        mut self,
        mut check: Box<dyn StreamCheck>,
    ) -> Result<Fetch, ItemError> {
        check.restart(self.total).map_err(|d| self.mismatch(d))?;
        self.check = Some(check);
        Ok(self)
    }

    fn mismatch(&self, detail: String) -> ItemError {
        source_error(SourceError::Mismatch {
            uri: self.uri.clone(),
            detail,
        })
    }

    /// The end of the stream as the check sees it (call once the stream ended).
    pub(crate) fn check_end(&mut self) -> Result<(), ItemError> {
        match self.check.as_mut().map(|c| c.finish()) {
            Some(Err(d)) => Err(self.mismatch(d)),
            _ => Ok(()),
        }
    }

    /// How many bytes the current answer promised (what is left of the file from `pos`).
    pub(crate) fn content_length(&self) -> Option<u64> {
        self.source.content_length()
    }

    pub(crate) fn can_retry(&self) -> bool {
        self.used < self.retry.retries
    }

    /// The next bytes: `Data(n)` (`n > 0`), `End`, or `Restart` when the server now sends the
    /// file from byte 0. Network failures are retried from `pos` within the retry policy.
    pub(crate) async fn read(
        &mut self,
        buf: &mut [u8],
        env: &mut Env<'_>,
    ) -> Result<Next, ItemError> {
        loop {
            let err = match self.source.read(buf).await {
                Ok(0) => return Ok(Next::End),
                Ok(n) => {
                    self.pos += n as u64;
                    if let Some(c) = self.check.as_mut() {
                        if let Err(d) = c.feed(&buf[..n]) {
                            return Err(self.mismatch(d));
                        }
                    }
                    return Ok(Next::Data(n));
                }
                Err(e) => e,
            };
            if !err.is_transient() || !self.can_retry() {
                return Err(source_error(err));
            }
            self.used += 1;
            backoff(env, &err, self.used, self.retry, self.pos, self.tag).await;
            match self.reconnect(env).await? {
                Next::Data(_) => continue,
                other => return Ok(other),
            }
        }
    }

    /// Ask again from `pos` (after a failure, or after the stream ended before the image was
    /// complete). `Data`: carry on reading; `End`: the server has nothing after `pos`;
    /// `Restart`: the new source starts at byte 0.
    pub(crate) async fn reconnect(&mut self, env: &mut Env<'_>) -> Result<Next, ItemError> {
        let if_range = self.validator.map(|v| v.as_str().to_string());
        let r = match open_with_retries(
            &self.uri,
            self.pos,
            if_range.as_deref(),
            None,
            &self.opts,
            self.retry,
            &mut self.used,
            env,
            self.tag,
        )
        .await
        {
            Ok(r) => r,
            // The file is exactly as long as what we have: nothing more to come.
            Err(SourceError::RangeNotSatisfiable { length, .. }) if length == self.pos => {
                return Ok(Next::End)
            }
            Err(
                e @ (SourceError::RangeNotSatisfiable { .. }
                | SourceError::HttpStatus {
                    status: HTTP_RANGE_NOT_SATISFIABLE,
                    ..
                }),
            ) => return self.restart_after_416(e, env).await,
            Err(e) => return Err(source_error(e)),
        };
        let honoured = r.honoured && self.pos > 0;
        let new_total = r.total_length;
        let seen = validator_of(&r);
        if honoured {
            let other_file = match (self.validator, seen) {
                (Some(k), Some(s)) if k.kind() == s.kind() => k.as_str() != s.as_str(),
                (Some(_), _) => false,
                // No validator: only the length can tell.
                (None, _) => matches!((self.total, new_total), (Some(a), Some(b)) if a != b),
            };
            if !other_file {
                self.source = r.body;
                if new_total.is_some() {
                    self.total = new_total;
                }
                env.info(
                    self.tag,
                    format!("Reconnected: continuing at byte {}", self.pos),
                );
                env.emit(Event::Resume {
                    id: self.id,
                    at: self.pos,
                    from: ResumeFrom::Reconnect,
                });
                return Ok(Next::Data(0));
            }
            env.warn(
                self.tag,
                "The file changed during the download: starting over from byte 0",
            );
            let mut used = self.used;
            let r = self.open_from_zero(&mut used, env).await?;
            self.used = used;
            self.take_from_zero(r, env, StartOverWhy::FileChanged)?;
            return Ok(Next::Restart);
        }
        if self.pos > 0 {
            env.warn(
                self.tag,
                format!(
                    "The server answered 200 to bytes={}- (Range not supported, or the file changed): starting over from byte 0",
                    self.pos
                ),
            );
        }
        let why = if seen.is_some() && seen != self.validator {
            StartOverWhy::FileChanged
        } else {
            StartOverWhy::RangeIgnored
        };
        self.take_from_zero(r, env, why)?;
        Ok(Next::Restart)
    }

    /// The whole file again, unconditionally.
    async fn open_from_zero(
        &mut self,
        used: &mut u32,
        env: &mut Env<'_>,
    ) -> Result<Opened, ItemError> {
        open_with_retries(
            &self.uri, 0, None, None, &self.opts, self.retry, used, env, self.tag,
        )
        .await
        .map_err(source_error)
    }

    /// A 416 to `bytes=pos-` (the file changed and is shorter now, or a server that checks
    /// `Range` before `If-Range`): download the file again from byte 0, as one of the retries.
    async fn restart_after_416(
        &mut self,
        e: SourceError,
        env: &mut Env<'_>,
    ) -> Result<Next, ItemError> {
        if !self.can_retry() {
            return Err(source_error(e));
        }
        self.used += 1;
        env.warn(
            self.tag,
            format!(
                "{}: starting over from byte 0, retry {} of {}",
                e, self.used, self.retry.retries
            ),
        );
        let mut used = self.used;
        let r = self.open_from_zero(&mut used, env).await?;
        self.used = used;
        self.take_from_zero(r, env, StartOverWhy::RangeNotSatisfiable)?;
        Ok(Next::Restart)
    }

    /// The server now sends the file from byte 0: so does this fetch (and its check).
    pub(crate) fn take_from_zero(
        &mut self,
        r: Opened,
        env: &mut Env<'_>,
        why: StartOverWhy,
    ) -> Result<(), ItemError> {
        if self.pos > 0 {
            env.emit(Event::StartOver {
                id: self.id,
                at: self.pos,
                why,
            });
        }
        self.validator = validator_of(&r);
        self.total = r.total_length;
        self.source = r.body;
        self.pos = 0;
        self.honoured = true;
        self.changed = false;
        self.restarts += 1;
        if let Some(c) = self.check.as_mut() {
            if let Err(d) = c.restart(self.total) {
                return Err(self.mismatch(d));
            }
        }
        Ok(())
    }

    /// Fill `buf` from the stream; fewer bytes only at its end. A server that starts the file
    /// over is an error here (`changed`): the caller has used the first bytes already.
    pub(crate) async fn read_full(
        &mut self,
        buf: &mut [u8],
        env: &mut Env<'_>,
        changed: &dyn Fn() -> ItemError,
    ) -> Result<usize, ItemError> {
        let mut got = 0;
        while got < buf.len() {
            match self.read(&mut buf[got..], env).await? {
                Next::Data(n) => got += n,
                Next::End => break,
                Next::Restart => return Err(changed()),
            }
        }
        Ok(got)
    }
}
