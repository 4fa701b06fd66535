//! The operator's web page at `/ui`: devices, releases and rollouts (a progress bar per group,
//! pause / resume / stop buttons), rendered on the server as plain HTML.
//!
//! Why server-rendered: the page shows what the admin API already computes, so one Rust
//! function per table is all it needs, with no build step and no JavaScript framework to keep
//! up to date; every value goes through [`esc`] in one place. The buttons are ordinary HTML
//! forms (they work without JavaScript); about ten lines of script refresh the tables every two
//! seconds by fetching `/ui?part=main` and swapping one element.
//!
//! Authentication: a login form posts the admin token once (`POST /ui/login`, form body, never
//! a URL); the server answers with an `HttpOnly; SameSite=Strict` cookie that holds no token:
//! `EXPIRY.MAC` where MAC = SHA-256(SHA-256(admin token) ‖ "ota-ui-session" ‖ EXPIRY). Any
//! server started with the same admin token accepts it (several instances behind one address),
//! none keeps session state, script on the page cannot read it (HttpOnly), and changing the
//! admin token ends every session. SameSite=Strict keeps other sites from posting the buttons
//! with the cookie, and a POST whose `Origin` names another host is refused as well. The
//! access log holds request lines only, and the token travels only in the login's body.

use bytes::Bytes;
use http_body::Body;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{self, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Method, Response, StatusCode};
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::auth::TokenHash;
use super::store::now_ms;
use super::{rollout, ApiError, Fleet};
use crate::http::RespBody;

/// Name of the session cookie.
pub const COOKIE: &str = "ota_ui";
/// How long a login lasts.
pub const SESSION_MS: i64 = 12 * 3600 * 1000;
/// Devices on one page of the table.
pub const DEVICES_PER_PAGE: i64 = 100;
/// Largest login body read.
const MAX_FORM: usize = 4096;

/// Whether `path` is the page's.
pub fn owns(path: &str) -> bool {
    path == "/ui" || path.starts_with("/ui/")
}

/// HTML-escape text for element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            // control characters (other than tab and newline) are shown as U+FFFD
            c if c.is_control() && c != '\t' && c != '\n' => o.push('\u{fffd}'),
            c => o.push(c),
        }
    }
    o
}

fn mac(admin: &TokenHash, expiry: i64) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(admin.0);
    h.update(b"ota-ui-session");
    h.update(expiry.to_string().as_bytes());
    h.finalize().into()
}

/// The cookie value of a session that ends at `expiry` (ms since 1970).
pub fn session_value(admin: &TokenHash, expiry: i64) -> String {
    format!("{expiry}.{}", super::auth::hex(&mac(admin, expiry)))
}

/// Whether a cookie value is a live session for this admin token.
pub fn session_ok(admin: &TokenHash, value: &str, now: i64) -> bool {
    let Some((e, m)) = value.split_once('.') else {
        return false;
    };
    let Ok(expiry) = e.parse::<i64>() else {
        return false;
    };
    let Some(m) = TokenHash::from_hex(m) else {
        return false;
    };
    let want = mac(admin, expiry);
    let same: bool = want.ct_eq(&m.0).into();
    same && expiry > now && expiry <= now + SESSION_MS
}

/// The session cookie of a request, if any (bounded: the header is at most what hyper takes).
fn cookie(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
}

fn html(status: StatusCode, body: String) -> Response<RespBody> {
    let len = body.len();
    let mut r = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // The page's own script and styles only; no framing by other sites.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    r
}

fn asset(ctype: &'static str, body: &'static str) -> Response<RespBody> {
    let mut r = Response::new(
        Full::new(Bytes::from_static(body.as_bytes()))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

fn redirect(to: &'static str, cookie: Option<String>) -> Response<RespBody> {
    let mut r = html(StatusCode::SEE_OTHER, String::new());
    r.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(to));
    if let Some(c) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        r.headers_mut().insert(header::SET_COOKIE, c);
    }
    r
}

fn page(title: &str, main: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><link rel=\"stylesheet\" href=\"/ui/style.css\">\
         <script src=\"/ui/app.js\" defer></script></head>\
         <body><header><h1>ota fleet</h1></header><main id=\"main\">{main}</main></body></html>\n",
        esc(title)
    )
}

fn login_page(fleet: &Fleet, message: Option<&str>) -> String {
    let msg = message
        .map(|m| format!("<p class=\"error\" role=\"alert\">{}</p>", esc(m)))
        .unwrap_or_default();
    page(
        &format!("ota fleet: sign in ({})", fleet.tenant),
        &format!(
            "<section><h2>Sign in</h2>{msg}<form method=\"post\" action=\"/ui/login\">\
             <label>Admin token <input type=\"password\" name=\"token\" id=\"token\" \
             autocomplete=\"current-password\" required maxlength=\"{}\"></label> \
             <button type=\"submit\" id=\"login\">Sign in</button></form></section>",
            super::auth::MAX_TOKEN_LEN
        ),
    )
}

/// Answer a request under `/ui`.
pub async fn route<B>(fleet: &Fleet, parts: &Parts, body: B) -> Result<Response<RespBody>, ApiError>
where
    B: Body<Data = Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let path = parts.uri.path();
    match (&parts.method, path) {
        (&Method::GET, "/ui/style.css") => return Ok(asset("text/css; charset=utf-8", STYLE)),
        (&Method::GET, "/ui/app.js") => return Ok(asset("text/javascript; charset=utf-8", SCRIPT)),
        _ => {}
    }
    let Some(admin) = fleet.admin else {
        return Ok(html(
            StatusCode::FORBIDDEN,
            page(
                "ota fleet",
                "<p class=\"error\">The page is off: start the server with --admin-token-file.</p>",
            ),
        ));
    };
    if parts.method == Method::POST && !same_origin(fleet, parts) {
        return Ok(html(
            StatusCode::FORBIDDEN,
            page(
                "ota fleet",
                "<p class=\"error\">Refused: the form was posted from another origin.</p>",
            ),
        ));
    }
    let secure = if fleet.base_url.starts_with("https") {
        "; Secure"
    } else {
        ""
    };
    if path == "/ui/login" {
        if parts.method != Method::POST {
            return Ok(redirect("/ui", None));
        }
        let token = read_form_token(parts, body).await?;
        let now = now_ms();
        if token
            .as_deref()
            .is_some_and(|t| TokenHash::of(t).matches(&admin))
        {
            super::log('I', format_args!("ui: sign-in"));
            let expiry = now + SESSION_MS;
            return Ok(redirect(
                "/ui",
                Some(format!(
                    "{COOKIE}={}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
                    session_value(&admin, expiry),
                    SESSION_MS / 1000
                )),
            ));
        }
        super::log('W', format_args!("ui: sign-in refused (wrong admin token)"));
        return Ok(html(
            StatusCode::UNAUTHORIZED,
            login_page(fleet, Some("That admin token was not accepted.")),
        ));
    }
    let signed_in = cookie(parts).is_some_and(|c| session_ok(&admin, c, now_ms()));
    if !signed_in {
        if parts.method == Method::GET && path == "/ui" {
            return Ok(html(StatusCode::OK, login_page(fleet, None)));
        }
        return Ok(html(
            StatusCode::UNAUTHORIZED,
            login_page(fleet, Some("Sign in first.")),
        ));
    }
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (&parts.method, segs.as_slice()) {
        (&Method::GET, ["ui"]) => {
            let q = parts.uri.query().unwrap_or("");
            let after = q
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == "after")
                .map(|(_, v)| {
                    percent_encoding::percent_decode_str(v)
                        .decode_utf8_lossy()
                        .to_string()
                })
                .unwrap_or_default();
            let main = render_main(fleet, &after).await?;
            if q.split('&').any(|kv| kv == "part=main") {
                return Ok(html(StatusCode::OK, main));
            }
            Ok(html(
                StatusCode::OK,
                page(&format!("ota fleet ({})", fleet.tenant), &main),
            ))
        }
        (&Method::POST, ["ui", "logout"]) => Ok(redirect(
            "/ui",
            Some(format!(
                "{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0{secure}"
            )),
        )),
        (&Method::POST, ["ui", "rollouts", id, verb]) => {
            let id: i64 = id
                .parse()
                .map_err(|_| ApiError::not_found("no such rollout"))?;
            let now = now_ms();
            let r = match *verb {
                "start" => rollout::start(&fleet.store, id, now).await,
                "pause" => rollout::pause(&fleet.store, id, now).await,
                "resume" => rollout::resume(&fleet.store, id, now).await,
                "stop" => rollout::stop(&fleet.store, id, now).await,
                _ => return Err(ApiError::not_found("no such rollout action")),
            };
            match r {
                Ok(()) => {
                    super::log('I', format_args!("ui: rollout {id}: {verb}"));
                    Ok(redirect("/ui", None))
                }
                Err(e) => {
                    let e: ApiError = e.into();
                    let status = e.status;
                    let main = format!(
                        "<p class=\"error\" role=\"alert\">{}</p><p><a href=\"/ui\">Back</a></p>",
                        esc(&e.message)
                    );
                    Ok(html(status, page("ota fleet", &main)))
                }
            }
        }
        _ => Ok(html(
            StatusCode::NOT_FOUND,
            page("ota fleet", "<p class=\"error\">No such page.</p>"),
        )),
    }
}

/// A POST is same-origin when it has no `Origin` (older browsers, curl) or one whose host is
/// the request's `Host`.
fn same_origin(_fleet: &Fleet, parts: &Parts) -> bool {
    let Some(origin) = parts
        .headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
    else {
        return true;
    };
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let o = origin.split_once("://").map(|x| x.1).unwrap_or("");
    !host.is_empty() && o.eq_ignore_ascii_case(host)
}

/// The `token` field of a urlencoded login form (at most [`MAX_FORM`] bytes).
async fn read_form_token<B>(parts: &Parts, body: B) -> Result<Option<String>, ApiError>
where
    B: Body<Data = Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let ct = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if !ct.starts_with("application/x-www-form-urlencoded") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("login: Content-Type {ct:?}: expected application/x-www-form-urlencoded"),
        ));
    }
    let bytes = match Limited::new(body, MAX_FORM).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("login: body larger than {MAX_FORM} bytes"),
                ));
            }
            return Err(ApiError::bad(format!("login: reading the body: {e}")));
        }
    };
    let s = String::from_utf8_lossy(&bytes);
    Ok(s.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "token")
        .map(|(_, v)| {
            percent_encoding::percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .trim()
                .to_string()
        }))
}

fn when(ms: Option<i64>, now: i64) -> String {
    match ms {
        None => "never".into(),
        Some(t) => {
            let s = (now - t).max(0) / 1000;
            if s < 60 {
                format!("{s} s ago")
            } else if s < 3600 {
                format!("{} min ago", s / 60)
            } else if s < 86400 {
                format!("{} h ago", s / 3600)
            } else {
                format!("{} d ago", s / 86400)
            }
        }
    }
}

fn opt(s: &Option<String>) -> String {
    s.as_deref().map(esc).unwrap_or_else(|| "–".into())
}

fn vstr(v: &Value) -> String {
    match v {
        Value::String(s) => esc(s),
        Value::Null => "–".into(),
        other => esc(&other.to_string()),
    }
}

async fn render_main(fleet: &Fleet, after: &str) -> Result<String, ApiError> {
    let now = now_ms();
    let mut o = String::new();
    o.push_str(
        "<form method=\"post\" action=\"/ui/logout\" class=\"logout\">\
         <button type=\"submit\">Sign out</button></form>",
    );
    // Rollouts first: what an operator acts on.
    o.push_str("<section id=\"rollouts\"><h2>Rollouts</h2>");
    let rollouts = fleet.store.rollouts().await?;
    if rollouts.is_empty() {
        o.push_str("<p>No rollouts.</p>");
    }
    for r in rollouts.iter().rev() {
        let v = super::admin::rollout_json(fleet, r, false).await?;
        let state = v["state"].as_str().unwrap_or("");
        o.push_str(&format!(
            "<article class=\"rollout\" id=\"rollout-{id}\" data-state=\"{st}\">\
             <h3>{name} <span class=\"state state-{st}\">{st}</span></h3>\
             <p>release {rel}, success threshold {sth} %, error threshold {eth} %</p>",
            id = r.id,
            st = esc(state),
            name = esc(&r.name),
            rel = r.release_id,
            sth = r.success_threshold,
            eth = r.error_threshold,
        ));
        o.push_str("<table class=\"groups\"><thead><tr><th>group</th><th>share</th><th>state</th><th>progress</th><th>devices</th></tr></thead><tbody>");
        for g in v["groups"].as_array().into_iter().flatten() {
            let c = &g["counts"];
            let n = |k: &str| c[k].as_i64().unwrap_or(0);
            let total = n("total").max(0);
            let pct = |x: i64| {
                if total == 0 {
                    0.0
                } else {
                    (x as f64) * 100.0 / (total as f64)
                }
            };
            let open = n("scheduled") + n("running") + n("canceling");
            let gstate = g["state"].as_str().unwrap_or("");
            let idx = g["index"].as_i64().unwrap_or(0);
            let ok = n("success");
            let bad = n("failure");
            let done = ok + bad + n("canceled");
            o.push_str(&format!(
                "<tr class=\"group\" data-group=\"{idx}\" data-state=\"{gs}\" \
                 data-success=\"{ok}\" data-failure=\"{bad}\" data-total=\"{total}\">\
                 <td>{g1}</td><td>{pc} %</td><td><span class=\"state state-{gs}\">{gs}</span></td>\
                 <td><div class=\"bar\" role=\"progressbar\" aria-valuemin=\"0\" \
                 aria-valuemax=\"{total}\" aria-valuenow=\"{done}\">\
                 <span class=\"ok w{wo}\"></span><span class=\"bad w{wb}\"></span>\
                 <span class=\"open w{wr}\"></span></div></td>\
                 <td>{ok} ok, {bad} failed, {open} open, {cn} canceled of {total}</td></tr>",
                g1 = idx + 1,
                pc = g["percent"].as_i64().unwrap_or(0),
                gs = esc(gstate),
                cn = n("canceled"),
                // widths in whole percent, as classes (the CSP allows no inline style)
                wo = pct(ok).round() as i64,
                wb = pct(bad).round() as i64,
                wr = pct(open).round() as i64,
            ));
        }
        o.push_str("</tbody></table><div class=\"actions\">");
        for (verb, label, enabled) in [
            ("start", "Start", state == "ready"),
            ("pause", "Pause", state == "running"),
            ("resume", "Resume", state == "paused"),
            (
                "stop",
                "Stop",
                matches!(state, "ready" | "running" | "paused"),
            ),
        ] {
            if enabled {
                o.push_str(&format!(
                    "<form method=\"post\" action=\"/ui/rollouts/{id}/{verb}\">\
                     <button type=\"submit\" class=\"{verb}\" data-action=\"{verb}\">{label}</button></form>",
                    id = r.id
                ));
            }
        }
        o.push_str("</div></article>");
    }
    o.push_str("</section>");

    o.push_str("<section id=\"releases\"><h2>Releases</h2>");
    let releases = fleet.store.releases().await?;
    if releases.is_empty() {
        o.push_str("<p>No releases.</p>");
    } else {
        o.push_str("<table><thead><tr><th>id</th><th>project</th><th>version</th><th>chip</th><th>file</th><th>size</th><th>SHA-256</th></tr></thead><tbody>");
        for r in &releases {
            o.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
                r.id,
                opt(&r.project),
                opt(&r.version),
                opt(&r.chip),
                esc(&r.path),
                r.size,
                esc(r.sha256.get(..16).unwrap_or(&r.sha256)),
            ));
        }
        o.push_str("</tbody></table>");
    }
    o.push_str("</section>");

    let total = fleet.store.device_count().await?;
    let devices = fleet.store.devices(after, DEVICES_PER_PAGE).await?;
    o.push_str(&format!(
        "<section id=\"devices\"><h2>Devices <span class=\"count\">{total}</span></h2>"
    ));
    if devices.is_empty() {
        o.push_str("<p>No devices.</p>");
    } else {
        o.push_str("<table><thead><tr><th>id</th><th>chip</th><th>project</th><th>version</th><th>last seen</th><th>last result</th></tr></thead><tbody>");
        for d in &devices {
            let j = super::admin::device_json(d);
            o.push_str(&format!(
                "<tr class=\"device\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&d.controller_id),
                vstr(&j["chip"]),
                vstr(&j["project"]),
                vstr(&j["version"]),
                esc(&when(d.last_seen, now)),
                vstr(&j["last_result"]),
            ));
        }
        o.push_str("</tbody></table>");
        if devices.len() as i64 == DEVICES_PER_PAGE {
            if let Some(last) = devices.last() {
                let next: String = percent_encoding::utf8_percent_encode(
                    &last.controller_id,
                    percent_encoding::NON_ALPHANUMERIC,
                )
                .to_string();
                o.push_str(&format!(
                    "<p><a href=\"/ui?after={}\">Next {DEVICES_PER_PAGE} devices</a></p>",
                    esc(&next)
                ));
            }
        }
    }
    o.push_str("</section>");
    Ok(o)
}

/// The page's script: refresh `#main` every two seconds (keeping the devices page the
/// address names); the forms work without it.
const SCRIPT: &str = r#""use strict";
setInterval(async () => {
  const u = new URL(location.href); u.searchParams.set("part", "main");
  try {
    const r = await fetch(u, {credentials: "same-origin", cache: "no-store"});
    if (r.ok && r.headers.get("content-type").startsWith("text/html")) {
      document.getElementById("main").innerHTML = await r.text();
    }
  } catch (e) { /* the server is away: keep what is shown */ }
}, 2000);
"#;

const STYLE: &str = include_str!("ui.css");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_quotes_and_controls() {
        assert_eq!(
            esc("<script>\"a\"&'b'\u{7}"),
            "&lt;script&gt;&quot;a&quot;&amp;&#39;b&#39;\u{fffd}"
        );
        assert_eq!(esc("dev-1"), "dev-1");
    }

    #[test]
    fn sessions_are_bound_to_the_token_and_expire() {
        let a = TokenHash::of("admin");
        let now = 1_000_000;
        let v = session_value(&a, now + 1000);
        assert!(session_ok(&a, &v, now));
        assert!(!session_ok(&TokenHash::of("other"), &v, now));
        assert!(!session_ok(&a, &v, now + 1000));
        // a forged expiry far in the future with the old MAC
        let mac = v.split_once('.').unwrap().1;
        assert!(!session_ok(&a, &format!("{}.{mac}", now + 5000), now));
        assert!(!session_ok(&a, "garbage", now));
        assert!(!session_ok(&a, "1.zz", now));
        // a cookie holds no token, nor the token's hash
        assert!(!v.contains("admin") && !v.contains(&a.to_hex()));
    }
}
