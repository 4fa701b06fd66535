//! `ota devices ...` and `ota rollout ...`: thin clients of a fleet server's admin API
//! (`ota serve --fleet`, `/api/v1/...`, `Authorization: Bearer`). Plain HTTP on the server's
//! address; every call has a deadline and a bounded answer.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

/// Deadline of each connect, read and write.
const DEADLINE: Duration = Duration::from_secs(30);
/// Largest answer read.
const MAX_ANSWER: u64 = 64 << 20;

#[derive(Args, Clone)]
pub struct Conn {
    /// Fleet server (`ota serve --fleet`), e.g. http://127.0.0.1:8080.
    #[arg(long, value_name = "URL")]
    server: String,
    /// File holding the admin token (first line).
    #[arg(long, value_name = "FILE")]
    admin_token_file: PathBuf,
    /// Print the server's JSON instead of a table.
    #[arg(long)]
    json: bool,
}

impl Conn {
    /// A connection to `server` with the admin token of `admin_token_file` (for `ota
    /// fleet-sim --ddi`).
    pub fn new(server: &str, admin_token_file: PathBuf) -> Conn {
        Conn {
            server: server.to_string(),
            admin_token_file,
            json: false,
        }
    }
}

#[derive(Subcommand)]
pub enum DevicesCmd {
    /// List the registered devices: id, chip, project, version, last seen, last result.
    List(Conn),
    /// Register a device; prints its DDI target token (shown only this once).
    Register {
        #[command(flatten)]
        conn: Conn,
        /// Controller id.
        id: String,
    },
}

#[derive(Subcommand)]
pub enum RolloutCmd {
    /// Create a rollout of a release to the devices the filter selects.
    Create {
        #[command(flatten)]
        conn: Conn,
        /// Rollout name (also seeds the stable order of devices into groups).
        #[arg(long)]
        name: String,
        /// Release id (`GET /api/v1/releases`).
        #[arg(long)]
        release: i64,
        /// Groups as cumulative percentages of the matching devices, the last 100.
        #[arg(long, value_delimiter = ',', default_value = "1,10,50,100")]
        groups: Vec<i64>,
        /// Percent of a group finished with success that starts the next group.
        #[arg(long, default_value_t = 100)]
        success_threshold: i64,
        /// Percent of a group failed that pauses the rollout.
        #[arg(long, default_value_t = 10)]
        error_threshold: i64,
        /// Only devices of this project (default: the release's).
        #[arg(long)]
        project: Option<String>,
        /// Only devices of this chip (default: the release's).
        #[arg(long)]
        chip: Option<String>,
        /// Only devices with this configData attribute (KEY=VALUE, repeatable).
        #[arg(long = "attr", value_name = "KEY=VALUE")]
        attrs: Vec<String>,
        /// Start it at once (otherwise `ota rollout start ID`).
        #[arg(long)]
        start: bool,
    },
    /// List rollouts with their progress.
    List(Conn),
    /// Show one rollout: groups with counts, and its timeline.
    Show {
        #[command(flatten)]
        conn: Conn,
        /// Rollout id.
        id: i64,
    },
    /// Start a ready rollout.
    Start {
        #[command(flatten)]
        conn: Conn,
        /// Rollout id.
        id: i64,
    },
    /// Pause a running rollout (no new group starts).
    Pause {
        #[command(flatten)]
        conn: Conn,
        /// Rollout id.
        id: i64,
    },
    /// Resume a paused rollout.
    Resume {
        #[command(flatten)]
        conn: Conn,
        /// Rollout id.
        id: i64,
    },
    /// Emergency stop: cancel every open action of the rollout.
    Stop {
        #[command(flatten)]
        conn: Conn,
        /// Rollout id.
        id: i64,
    },
}

/// `http://host:port` → (host:port, path prefix).
fn split_url(url: &str) -> Result<(String, String)> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        anyhow!("--server {url}: expected http://HOST:PORT (the admin commands speak plain HTTP)")
    })?;
    let (auth, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if auth.is_empty() {
        bail!("--server {url}: no host");
    }
    let auth = if auth.contains(':') && !auth.ends_with(']') {
        auth.to_string()
    } else {
        format!("{auth}:80")
    };
    Ok((auth, path.to_string()))
}

/// One admin call; the answer's JSON, or an error with the server's message.
pub fn call(c: &Conn, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
    let token = ota_server::fleet::auth::read_token_file(&c.admin_token_file)
        .map_err(|e| anyhow!("--admin-token-file: {e}"))?;
    let (hostport, prefix) = split_url(&c.server)?;
    let addr = hostport
        .to_socket_addrs()
        .with_context(|| format!("--server {}", c.server))?
        .next()
        .ok_or_else(|| anyhow!("--server {}: no address", c.server))?;
    let mut s = TcpStream::connect_timeout(&addr, DEADLINE)
        .with_context(|| format!("connecting to {}", c.server))?;
    s.set_read_timeout(Some(DEADLINE))?;
    s.set_write_timeout(Some(DEADLINE))?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {prefix}{path} HTTP/1.1\r\nHost: {hostport}\r\nAuthorization: Bearer {token}\r\n\
         Connection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())
        .with_context(|| format!("sending to {}", c.server))?;
    let mut all = Vec::new();
    s.take(MAX_ANSWER + 1)
        .read_to_end(&mut all)
        .with_context(|| format!("reading the answer of {}", c.server))?;
    if all.len() as u64 > MAX_ANSWER {
        bail!("{}: answer larger than {MAX_ANSWER} bytes", c.server);
    }
    let end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("{}: not an HTTP answer", c.server))?;
    let head = String::from_utf8_lossy(&all[..end]);
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("{}: no status in {:?}", c.server, head.lines().next()))?;
    let text = String::from_utf8_lossy(&all[end + 4..]).to_string();
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if !(200..300).contains(&status) {
        let msg = v["message"]
            .as_str()
            .map_or(text.trim().to_string(), str::to_string);
        bail!("{method} {path}: {status}: {msg}");
    }
    Ok(v)
}

fn ts(ms: &Value) -> String {
    match ms.as_i64() {
        None => "-".into(),
        Some(ms) => {
            let t = std::time::UNIX_EPOCH + Duration::from_millis(ms as u64);
            ota_server::http::log_date(t)
        }
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn print_rollout(v: &Value) {
    println!(
        "rollout {} {:?}: release {}, {}, success threshold {} %, error threshold {} %",
        s(&v["id"]),
        s(&v["name"]),
        s(&v["release"]),
        s(&v["state"]),
        s(&v["success_threshold"]),
        s(&v["error_threshold"])
    );
    for g in v["groups"].as_array().into_iter().flatten() {
        let c = &g["counts"];
        println!(
            "  group {} (to {} %): {:<9} {} devices: {} success, {} failure, {} running, {} scheduled, {} canceled",
            s(&g["index"]),
            s(&g["percent"]),
            s(&g["state"]),
            s(&c["total"]),
            s(&c["success"]),
            s(&c["failure"]),
            c["running"].as_i64().unwrap_or(0) + c["canceling"].as_i64().unwrap_or(0),
            s(&c["scheduled"]),
            s(&c["canceled"])
        );
    }
    for e in v["timeline"].as_array().into_iter().flatten() {
        let g = e["group"]
            .as_i64()
            .map(|g| format!(" (group {g})"))
            .unwrap_or_default();
        println!("  {}  {}{g}", ts(&e["at"]), s(&e["event"]));
    }
}

pub fn run_devices(c: DevicesCmd) -> Result<ExitCode> {
    match c {
        DevicesCmd::List(conn) => {
            let mut all = Vec::new();
            let mut after = String::new();
            loop {
                let path = format!(
                    "/api/v1/devices?limit=1000&after={}",
                    percent_encode(&after)
                );
                let v = call(&conn, "GET", &path, None)?;
                let page = v["devices"].as_array().cloned().unwrap_or_default();
                let n = page.len();
                if let Some(last) = page.last() {
                    after = s(&last["id"]);
                }
                all.extend(page);
                if n < 1000 {
                    break;
                }
            }
            if conn.json {
                println!("{}", json!({"devices": all}));
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{:<24} {:<10} {:<16} {:<12} {:<20} LAST RESULT",
                "ID", "CHIP", "PROJECT", "VERSION", "LAST SEEN (UTC)"
            );
            for d in &all {
                println!(
                    "{:<24} {:<10} {:<16} {:<12} {:<20} {}",
                    s(&d["id"]),
                    s(&d["chip"]),
                    s(&d["project"]),
                    s(&d["version"]),
                    ts(&d["last_seen"]),
                    s(&d["last_result"])
                );
            }
            println!("{} devices", all.len());
        }
        DevicesCmd::Register { conn, id } => {
            let v = call(&conn, "POST", "/api/v1/devices", Some(&json!({ "id": id })))?;
            if conn.json {
                println!("{v}");
            } else {
                println!(
                    "registered {}; its target token (shown once): {}",
                    s(&v["id"]),
                    s(&v["token"])
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn percent_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

pub fn run_rollout(c: RolloutCmd) -> Result<ExitCode> {
    let (conn, v) = match c {
        RolloutCmd::Create {
            conn,
            name,
            release,
            groups,
            success_threshold,
            error_threshold,
            project,
            chip,
            attrs,
            start,
        } => {
            let mut a = serde_json::Map::new();
            for kv in &attrs {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| anyhow!("--attr {kv}: expected KEY=VALUE"))?;
                a.insert(k.to_string(), Value::String(v.to_string()));
            }
            let mut filter = json!({ "attributes": a });
            if let Some(p) = project {
                filter["project"] = json!(p);
            }
            if let Some(c) = chip {
                filter["chip"] = json!(c);
            }
            let body = json!({
                "name": name, "release": release, "groups": groups,
                "success_threshold": success_threshold, "error_threshold": error_threshold,
                "filter": filter, "start": start,
            });
            let v = call(&conn, "POST", "/api/v1/rollouts", Some(&body))?;
            (conn, v)
        }
        RolloutCmd::List(conn) => {
            let v = call(&conn, "GET", "/api/v1/rollouts", None)?;
            if conn.json {
                println!("{v}");
            } else {
                for r in v["rollouts"].as_array().into_iter().flatten() {
                    print_rollout(r);
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        RolloutCmd::Show { conn, id } => {
            let v = call(&conn, "GET", &format!("/api/v1/rollouts/{id}"), None)?;
            (conn, v)
        }
        RolloutCmd::Start { conn, id } => verb(conn, id, "start")?,
        RolloutCmd::Pause { conn, id } => verb(conn, id, "pause")?,
        RolloutCmd::Resume { conn, id } => verb(conn, id, "resume")?,
        RolloutCmd::Stop { conn, id } => verb(conn, id, "stop")?,
    };
    if conn.json {
        println!("{v}");
    } else {
        print_rollout(&v);
    }
    Ok(ExitCode::SUCCESS)
}

fn verb(conn: Conn, id: i64, what: &str) -> Result<(Conn, Value)> {
    let v = call(
        &conn,
        "POST",
        &format!("/api/v1/rollouts/{id}/{what}"),
        None,
    )?;
    Ok((conn, v))
}
