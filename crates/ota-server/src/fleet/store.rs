//! The fleet's database: devices, releases, rollouts, their groups, actions and the rollout
//! timeline, over SQLite or PostgreSQL through sqlx's `Any` driver. One schema, one list of
//! migrations (embedded below, applied in order at start, each once: the `schema_version`
//! table); the only dialect difference is the type of an auto-numbered key.
//!
//! Several servers may share one PostgreSQL database: every state change that must happen once
//! (a group starting, a rollout pausing or finishing, an action closing) is an `UPDATE ... WHERE
//! state = <expected>` whose row count says whether this server made the change; the timeline
//! entry is written in the same transaction, only by the server that did.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use super::auth::TokenHash;

/// Why the database failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("database {url}: unsupported URL (expected sqlite:PATH or postgres://...)")]
    Url { url: String },
    #[error("database migration {version}: {source}")]
    Migrate { version: i64, source: sqlx::Error },
    #[error("database: {0}")]
    Query(#[from] sqlx::Error),
    #[error("database: stored value {field} = {value:?} is not valid")]
    Value { field: &'static str, value: String },
}

/// Which database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DbKind {
    Sqlite,
    Postgres,
}

/// The migrations, in order. `{serial}` is the auto-numbered primary key of the dialect.
const MIGRATIONS: &[(i64, &str)] = &[(
    1,
    "CREATE TABLE devices (
        controller_id TEXT PRIMARY KEY,
        token_hash TEXT,
        chip TEXT,
        project TEXT,
        version TEXT,
        otadata_state TEXT,
        secure_version TEXT,
        attributes TEXT NOT NULL,
        attrs_requested BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        last_seen BIGINT,
        last_result TEXT
    );
    CREATE TABLE releases (
        id {serial},
        path TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        sha1 TEXT NOT NULL,
        md5 TEXT NOT NULL,
        size BIGINT NOT NULL,
        chip TEXT,
        project TEXT,
        version TEXT,
        secure_version BIGINT,
        created_at BIGINT NOT NULL,
        UNIQUE (path, sha256)
    );
    CREATE TABLE rollouts (
        id {serial},
        name TEXT NOT NULL,
        release_id BIGINT NOT NULL,
        filter TEXT NOT NULL,
        success_threshold BIGINT NOT NULL,
        error_threshold BIGINT NOT NULL,
        state TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
    );
    CREATE TABLE rollout_groups (
        rollout_id BIGINT NOT NULL,
        idx BIGINT NOT NULL,
        percent BIGINT NOT NULL,
        total BIGINT NOT NULL,
        state TEXT NOT NULL,
        PRIMARY KEY (rollout_id, idx)
    );
    CREATE TABLE actions (
        id {serial},
        controller_id TEXT NOT NULL,
        release_id BIGINT NOT NULL,
        rollout_id BIGINT,
        group_idx BIGINT,
        state TEXT NOT NULL,
        execution TEXT,
        progress_cnt BIGINT,
        progress_of BIGINT,
        details TEXT,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
    );
    CREATE INDEX actions_by_device ON actions (controller_id, state);
    CREATE INDEX actions_by_rollout ON actions (rollout_id, group_idx, state);
    CREATE TABLE rollout_events (
        id {serial},
        rollout_id BIGINT NOT NULL,
        at BIGINT NOT NULL,
        event TEXT NOT NULL,
        group_idx BIGINT
    );",
)];

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A device as stored.
#[derive(Clone, Debug)]
pub struct Device {
    pub controller_id: String,
    pub token_hash: Option<TokenHash>,
    pub chip: Option<String>,
    pub project: Option<String>,
    pub version: Option<String>,
    pub otadata_state: Option<String>,
    pub secure_version: Option<String>,
    pub attributes: BTreeMap<String, String>,
    pub attrs_requested: bool,
    pub created_at: i64,
    pub last_seen: Option<i64>,
    pub last_result: Option<String>,
}

/// A release: one published app image (a hawkBit distribution set with one software module,
/// one artifact).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Release {
    pub id: i64,
    pub path: String,
    pub sha256: String,
    pub sha1: String,
    pub md5: String,
    pub size: i64,
    pub chip: Option<String>,
    pub project: Option<String>,
    pub version: Option<String>,
    pub secure_version: Option<i64>,
    pub created_at: i64,
}

/// An action: one release offered to one device.
#[derive(Clone, Debug)]
pub struct Action {
    pub id: i64,
    pub controller_id: String,
    pub release_id: i64,
    pub rollout_id: Option<i64>,
    pub group_idx: Option<i64>,
    pub state: ActionState,
}

/// Where an action is. `Scheduled`: its rollout group has not started (the device does not see
/// it); `Running`: offered; `Canceling`: stopped by the operator, the device is told to cancel;
/// the rest are final.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionState {
    Scheduled,
    Running,
    Canceling,
    Canceled,
    Success,
    Failure,
}

impl ActionState {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionState::Scheduled => "scheduled",
            ActionState::Running => "running",
            ActionState::Canceling => "canceling",
            ActionState::Canceled => "canceled",
            ActionState::Success => "success",
            ActionState::Failure => "failure",
        }
    }
    pub fn parse(s: &str) -> Option<ActionState> {
        Some(match s {
            "scheduled" => ActionState::Scheduled,
            "running" => ActionState::Running,
            "canceling" => ActionState::Canceling,
            "canceled" => ActionState::Canceled,
            "success" => ActionState::Success,
            "failure" => ActionState::Failure,
            _ => return None,
        })
    }
    pub fn is_open(self) -> bool {
        matches!(
            self,
            ActionState::Scheduled | ActionState::Running | ActionState::Canceling
        )
    }
}

/// A rollout as stored.
#[derive(Clone, Debug)]
pub struct RolloutRow {
    pub id: i64,
    pub name: String,
    pub release_id: i64,
    pub filter: String,
    pub success_threshold: i64,
    pub error_threshold: i64,
    pub state: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A rollout group as stored.
#[derive(Clone, Debug)]
pub struct GroupRow {
    pub idx: i64,
    pub percent: i64,
    pub total: i64,
    pub state: String,
}

/// One entry of a rollout's timeline.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Event {
    pub at: i64,
    pub event: String,
    pub group: Option<i64>,
}

/// The database.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    pub kind: DbKind,
}

fn opt_str(r: &AnyRow, c: &str) -> Result<Option<String>, sqlx::Error> {
    r.try_get::<Option<String>, _>(c)
}

impl Store {
    /// Connect (`sqlite:PATH`, created when missing; `postgres://...`) and apply the migrations.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let (kind, conn_url, max) = if let Some(path) = url.strip_prefix("sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(StoreError::Url { url: url.into() });
            }
            // One connection: SQLite has one writer anyway, and a single connection keeps every
            // transaction free of SQLITE_BUSY upgrades.
            (DbKind::Sqlite, format!("sqlite://{path}?mode=rwc"), 1)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (DbKind::Postgres, url.to_string(), 8)
        } else {
            return Err(StoreError::Url { url: url.into() });
        };
        let shown = redact(url);
        // One direct connection first: a pool that cannot connect only says it timed out,
        // this says why (refused, authentication, no such database).
        {
            use sqlx::Connection;
            let c = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                sqlx::AnyConnection::connect(&conn_url),
            )
            .await
            .map_err(|_| StoreError::Connect {
                url: shown.clone(),
                source: sqlx::Error::PoolTimedOut,
            })?
            .map_err(|source| StoreError::Connect {
                url: shown.clone(),
                source,
            })?;
            let _ = c.close().await;
        }
        let pool = AnyPoolOptions::new()
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if kind == DbKind::Sqlite {
                        // WAL with synchronous NORMAL: no corruption on a crash, commits without
                        // an fsync each (sqlite.org/wal.html, "Performance Considerations").
                        sqlx::query("PRAGMA synchronous = NORMAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA busy_timeout = 5000")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .max_connections(max)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect(&conn_url)
            .await
            .map_err(|source| StoreError::Connect {
                url: shown.clone(),
                source,
            })?;
        let s = Store { pool, kind };
        if kind == DbKind::Sqlite {
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&s.pool)
                .await
                .map_err(|source| StoreError::Connect {
                    url: shown.clone(),
                    source,
                })?;
        }
        s.migrate().await?;
        Ok(s)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let serial = match self.kind {
            DbKind::Sqlite => "INTEGER PRIMARY KEY AUTOINCREMENT",
            DbKind::Postgres => "BIGSERIAL PRIMARY KEY",
        };
        let mut tx = self.pool.begin().await?;
        if self.kind == DbKind::Postgres {
            // Two servers starting at once over one database: one migrates, the other waits.
            sqlx::query("SELECT pg_advisory_xact_lock(7242001)")
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
            .execute(&mut *tx)
            .await?;
        let done: Option<i64> = sqlx::query("SELECT MAX(version) AS v FROM schema_version")
            .fetch_one(&mut *tx)
            .await?
            .try_get::<Option<i64>, _>("v")?;
        let done = done.unwrap_or(0);
        for (version, sql) in MIGRATIONS {
            if *version <= done {
                continue;
            }
            let sql = sql.replace("{serial}", serial);
            for stmt in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                sqlx::query(stmt)
                    .execute(&mut *tx)
                    .await
                    .map_err(|source| StoreError::Migrate {
                        version: *version,
                        source,
                    })?;
            }
            sqlx::query("INSERT INTO schema_version (version) VALUES ($1)")
                .bind(*version)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The schema version in force.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query("SELECT MAX(version) AS v FROM schema_version")
            .fetch_one(&self.pool)
            .await?
            .try_get::<Option<i64>, _>("v")?
            .unwrap_or(0))
    }

    // ---- devices ----

    fn device_row(r: &AnyRow) -> Result<Device, StoreError> {
        let attrs: String = r.try_get("attributes")?;
        let attributes = serde_json::from_str(&attrs).map_err(|_| StoreError::Value {
            field: "devices.attributes",
            value: attrs.chars().take(80).collect(),
        })?;
        Ok(Device {
            controller_id: r.try_get("controller_id")?,
            token_hash: opt_str(r, "token_hash")?
                .as_deref()
                .and_then(TokenHash::from_hex),
            chip: opt_str(r, "chip")?,
            project: opt_str(r, "project")?,
            version: opt_str(r, "version")?,
            otadata_state: opt_str(r, "otadata_state")?,
            secure_version: opt_str(r, "secure_version")?,
            attributes,
            attrs_requested: r.try_get::<i64, _>("attrs_requested")? != 0,
            created_at: r.try_get("created_at")?,
            last_seen: r.try_get::<Option<i64>, _>("last_seen")?,
            last_result: opt_str(r, "last_result")?,
        })
    }

    pub async fn device(&self, id: &str) -> Result<Option<Device>, StoreError> {
        let r = sqlx::query("SELECT * FROM devices WHERE controller_id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        r.as_ref().map(Self::device_row).transpose()
    }

    /// Register a device (no-op when it exists). Returns whether it was created.
    pub async fn register_device(
        &self,
        id: &str,
        token: Option<TokenHash>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "INSERT INTO devices (controller_id, token_hash, attributes, attrs_requested, created_at)
             VALUES ($1, $2, '{}', 1, $3) ON CONFLICT (controller_id) DO NOTHING",
        )
        .bind(id)
        .bind(token.map(|t| t.to_hex()))
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Give an existing device a (new) target token.
    pub async fn set_device_token(&self, id: &str, token: TokenHash) -> Result<bool, StoreError> {
        let n = sqlx::query("UPDATE devices SET token_hash = $1 WHERE controller_id = $2")
            .bind(token.to_hex())
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    pub async fn touch(&self, id: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE devices SET last_seen = $1 WHERE controller_id = $2")
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Store the device's attributes (the whole map after merge/replace/remove).
    pub async fn set_attributes(
        &self,
        id: &str,
        attrs: &BTreeMap<String, String>,
        now: i64,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(attrs).unwrap_or_else(|_| "{}".into());
        let get = |k: &str| attrs.get(k).cloned();
        sqlx::query(
            "UPDATE devices SET attributes = $1, chip = $2, project = $3, version = $4,
             otadata_state = $5, secure_version = $6, attrs_requested = 0, last_seen = $7
             WHERE controller_id = $8",
        )
        .bind(json)
        .bind(get("chip"))
        .bind(get("project"))
        .bind(get("version"))
        .bind(get("otadata_state"))
        .bind(get("secure_version"))
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Devices ordered by id, `limit` from `after` (exclusive).
    pub async fn devices(&self, after: &str, limit: i64) -> Result<Vec<Device>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM devices WHERE controller_id > $1 ORDER BY controller_id LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Self::device_row).collect()
    }

    pub async fn device_count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM devices")
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?)
    }

    /// Every device (id, chip, project, attributes) for a rollout's filter.
    pub async fn all_devices(&self) -> Result<Vec<Device>, StoreError> {
        let rows = sqlx::query("SELECT * FROM devices ORDER BY controller_id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(Self::device_row).collect()
    }

    // ---- releases ----

    fn release_row(r: &AnyRow) -> Result<Release, StoreError> {
        Ok(Release {
            id: r.try_get("id")?,
            path: r.try_get("path")?,
            sha256: r.try_get("sha256")?,
            sha1: r.try_get("sha1")?,
            md5: r.try_get("md5")?,
            size: r.try_get("size")?,
            chip: opt_str(r, "chip")?,
            project: opt_str(r, "project")?,
            version: opt_str(r, "version")?,
            secure_version: r.try_get::<Option<i64>, _>("secure_version")?,
            created_at: r.try_get("created_at")?,
        })
    }

    /// Whether this file version is already a release.
    pub async fn has_release(&self, path: &str, sha256: &str) -> Result<bool, StoreError> {
        Ok(
            sqlx::query("SELECT id FROM releases WHERE path = $1 AND sha256 = $2")
                .bind(path)
                .bind(sha256)
                .fetch_optional(&self.pool)
                .await?
                .is_some(),
        )
    }

    /// Add a release (kept when another server added the same file version first).
    pub async fn add_release(&self, r: &Release) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO releases (path, sha256, sha1, md5, size, chip, project, version,
             secure_version, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (path, sha256) DO NOTHING",
        )
        .bind(&r.path)
        .bind(&r.sha256)
        .bind(&r.sha1)
        .bind(&r.md5)
        .bind(r.size)
        .bind(r.chip.clone())
        .bind(r.project.clone())
        .bind(r.version.clone())
        .bind(r.secure_version)
        .bind(r.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn release_by_file(
        &self,
        path: &str,
        sha256: &str,
    ) -> Result<Option<Release>, StoreError> {
        let r = sqlx::query("SELECT * FROM releases WHERE path = $1 AND sha256 = $2")
            .bind(path)
            .bind(sha256)
            .fetch_optional(&self.pool)
            .await?;
        r.as_ref().map(Self::release_row).transpose()
    }

    pub async fn releases(&self) -> Result<Vec<Release>, StoreError> {
        let rows = sqlx::query("SELECT * FROM releases ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(Self::release_row).collect()
    }

    pub async fn release(&self, id: i64) -> Result<Option<Release>, StoreError> {
        let r = sqlx::query("SELECT * FROM releases WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        r.as_ref().map(Self::release_row).transpose()
    }

    // ---- actions ----

    fn action_row(r: &AnyRow) -> Result<Action, StoreError> {
        let state: String = r.try_get("state")?;
        Ok(Action {
            id: r.try_get("id")?,
            controller_id: r.try_get("controller_id")?,
            release_id: r.try_get("release_id")?,
            rollout_id: r.try_get::<Option<i64>, _>("rollout_id")?,
            group_idx: r.try_get::<Option<i64>, _>("group_idx")?,
            state: ActionState::parse(&state).ok_or(StoreError::Value {
                field: "actions.state",
                value: state,
            })?,
        })
    }

    /// The device's offered action (running or being canceled), oldest first.
    pub async fn open_action(&self, device: &str) -> Result<Option<Action>, StoreError> {
        let r = sqlx::query(
            "SELECT * FROM actions WHERE controller_id = $1 AND state IN ('running', 'canceling')
             ORDER BY id LIMIT 1",
        )
        .bind(device)
        .fetch_optional(&self.pool)
        .await?;
        r.as_ref().map(Self::action_row).transpose()
    }

    pub async fn action(&self, id: i64) -> Result<Option<Action>, StoreError> {
        let r = sqlx::query("SELECT * FROM actions WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        r.as_ref().map(Self::action_row).transpose()
    }

    /// Record intermediate feedback (execution state, progress, details) of an open action.
    pub async fn action_progress(
        &self,
        id: i64,
        execution: &str,
        progress: Option<(i64, i64)>,
        details: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE actions SET execution = $1, progress_cnt = $2, progress_of = $3, details = $4,
             updated_at = $5 WHERE id = $6",
        )
        .bind(execution)
        .bind(progress.map(|p| p.0))
        .bind(progress.map(|p| p.1))
        .bind(details)
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Close an action (`from` one of the open states it must still be in); the device's last
    /// result is set in the same transaction. Returns whether this call closed it.
    pub async fn close_action(
        &self,
        id: i64,
        device: &str,
        to: ActionState,
        execution: &str,
        details: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query(
            "UPDATE actions SET state = $1, execution = $2, details = $3, updated_at = $4
             WHERE id = $5 AND state IN ('running', 'canceling')",
        )
        .bind(to.as_str())
        .bind(execution)
        .bind(details)
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 1 {
            sqlx::query(
                "UPDATE devices SET last_result = $1, attrs_requested = 1 WHERE controller_id = $2",
            )
            .bind(to.as_str())
            .bind(device)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(n == 1)
    }

    // ---- rollouts ----

    fn rollout_row(r: &AnyRow) -> Result<RolloutRow, StoreError> {
        Ok(RolloutRow {
            id: r.try_get("id")?,
            name: r.try_get("name")?,
            release_id: r.try_get("release_id")?,
            filter: r.try_get("filter")?,
            success_threshold: r.try_get("success_threshold")?,
            error_threshold: r.try_get("error_threshold")?,
            state: r.try_get("state")?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
        })
    }

    /// Create a rollout in state `ready` with its groups and one scheduled action per member
    /// (`members[i]` = the devices of group i), in one transaction.
    #[allow(clippy::too_many_arguments)]
    pub async fn create_rollout(
        &self,
        name: &str,
        release_id: i64,
        filter: &str,
        success_threshold: i64,
        error_threshold: i64,
        percents: &[i64],
        members: &[Vec<String>],
        now: i64,
    ) -> Result<i64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let id: i64 = sqlx::query(
            "INSERT INTO rollouts (name, release_id, filter, success_threshold, error_threshold,
             state, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 'ready', $6, $6)
             RETURNING id",
        )
        .bind(name)
        .bind(release_id)
        .bind(filter)
        .bind(success_threshold)
        .bind(error_threshold)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?
        .try_get("id")?;
        for (i, (p, m)) in percents.iter().zip(members).enumerate() {
            sqlx::query(
                "INSERT INTO rollout_groups (rollout_id, idx, percent, total, state)
                 VALUES ($1, $2, $3, $4, 'scheduled')",
            )
            .bind(id)
            .bind(i as i64)
            .bind(*p)
            .bind(m.len() as i64)
            .execute(&mut *tx)
            .await?;
            // Many rows per statement (5 parameters each; SQLite allows 32766 per statement).
            for chunk in m.chunks(500) {
                let mut sql = String::from(
                    "INSERT INTO actions (controller_id, release_id, rollout_id, group_idx, state,
                     created_at, updated_at) VALUES ",
                );
                for k in 0..chunk.len() {
                    let b = k * 5;
                    if k > 0 {
                        sql.push(',');
                    }
                    sql.push_str(&format!(
                        "(${}, ${}, ${}, ${}, 'scheduled', ${}, ${})",
                        b + 1,
                        b + 2,
                        b + 3,
                        b + 4,
                        b + 5,
                        b + 5
                    ));
                }
                let mut q = sqlx::query(&sql);
                for dev in chunk {
                    q = q
                        .bind(dev)
                        .bind(release_id)
                        .bind(id)
                        .bind(i as i64)
                        .bind(now);
                }
                q.execute(&mut *tx).await?;
            }
        }
        sqlx::query(
            "INSERT INTO rollout_events (rollout_id, at, event) VALUES ($1, $2, 'created')",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Devices that have an open action (they are not taken into a new rollout).
    pub async fn busy_devices(&self) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT DISTINCT controller_id FROM actions
             WHERE state IN ('scheduled', 'running', 'canceling')",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| r.try_get("controller_id").map_err(StoreError::from))
            .collect()
    }

    pub async fn rollouts(&self) -> Result<Vec<RolloutRow>, StoreError> {
        let rows = sqlx::query("SELECT * FROM rollouts ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(Self::rollout_row).collect()
    }

    pub async fn rollout(&self, id: i64) -> Result<Option<RolloutRow>, StoreError> {
        let r = sqlx::query("SELECT * FROM rollouts WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        r.as_ref().map(Self::rollout_row).transpose()
    }

    /// Ids of rollouts in a state the engine acts on.
    pub async fn active_rollouts(&self) -> Result<Vec<i64>, StoreError> {
        let rows = sqlx::query("SELECT id FROM rollouts WHERE state = 'running' ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| r.try_get("id").map_err(StoreError::from))
            .collect()
    }

    pub async fn groups(&self, rollout: i64) -> Result<Vec<GroupRow>, StoreError> {
        let rows = sqlx::query("SELECT * FROM rollout_groups WHERE rollout_id = $1 ORDER BY idx")
            .bind(rollout)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(GroupRow {
                    idx: r.try_get("idx")?,
                    percent: r.try_get("percent")?,
                    total: r.try_get("total")?,
                    state: r.try_get("state")?,
                })
            })
            .collect()
    }

    /// Per group, the number of actions in each state.
    pub async fn group_counts(
        &self,
        rollout: i64,
    ) -> Result<BTreeMap<i64, BTreeMap<ActionState, i64>>, StoreError> {
        let rows = sqlx::query(
            "SELECT group_idx, state, COUNT(*) AS n FROM actions WHERE rollout_id = $1
             GROUP BY group_idx, state",
        )
        .bind(rollout)
        .fetch_all(&self.pool)
        .await?;
        let mut out: BTreeMap<i64, BTreeMap<ActionState, i64>> = BTreeMap::new();
        for r in &rows {
            let g: Option<i64> = r.try_get("group_idx")?;
            let s: String = r.try_get("state")?;
            let n: i64 = r.try_get("n")?;
            let s = ActionState::parse(&s).ok_or(StoreError::Value {
                field: "actions.state",
                value: s,
            })?;
            out.entry(g.unwrap_or(0)).or_default().insert(s, n);
        }
        Ok(out)
    }

    pub async fn events(&self, rollout: i64) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query(
            "SELECT at, event, group_idx FROM rollout_events WHERE rollout_id = $1 ORDER BY id",
        )
        .bind(rollout)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Event {
                    at: r.try_get("at")?,
                    event: r.try_get("event")?,
                    group: r.try_get::<Option<i64>, _>("group_idx")?,
                })
            })
            .collect()
    }

    /// Move a rollout from one of `from` to `to`, with a timeline entry; whether this call did.
    pub async fn rollout_transition(
        &self,
        id: i64,
        from: &[&str],
        to: &str,
        event: &str,
        group: Option<i64>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let list = from
            .iter()
            .map(|s| format!("'{s}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let n = sqlx::query(&format!(
            "UPDATE rollouts SET state = $1, updated_at = $2 WHERE id = $3 AND state IN ({list})"
        ))
        .bind(to)
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 1 {
            if to == "stopped" {
                sqlx::query(
                    "UPDATE actions SET state = 'canceled', updated_at = $1
                     WHERE rollout_id = $2 AND state = 'scheduled'",
                )
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "UPDATE actions SET state = 'canceling', updated_at = $1
                     WHERE rollout_id = $2 AND state = 'running'",
                )
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "UPDATE rollout_groups SET state = 'stopped'
                     WHERE rollout_id = $1 AND state IN ('scheduled', 'running')",
                )
                .bind(id)
                .execute(&mut *tx)
                .await?;
            }
            Self::event(&mut tx, id, event, group, now).await?;
        }
        tx.commit().await?;
        if n == 1 {
            super::log('I', format_args!("rollout {id}: {event}"));
        }
        Ok(n == 1)
    }

    async fn event(
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        id: i64,
        event: &str,
        group: Option<i64>,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO rollout_events (rollout_id, at, event, group_idx) VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(now)
        .bind(event)
        .bind(group)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Move a group from `from` to `to` while its rollout is `running`; starting a group
    /// (`to = running`) offers its actions, an error (`to = error`) pauses the rollout in the
    /// same transaction. Whether this call did it.
    pub async fn group_transition(
        &self,
        rollout: i64,
        idx: i64,
        from: &str,
        to: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query(
            "UPDATE rollout_groups SET state = $1 WHERE rollout_id = $2 AND idx = $3
             AND state = $4
             AND EXISTS (SELECT 1 FROM rollouts WHERE id = $2 AND state = 'running')",
        )
        .bind(to)
        .bind(rollout)
        .bind(idx)
        .bind(from)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 1 {
            if to == "running" {
                sqlx::query(
                    "UPDATE actions SET state = 'running', updated_at = $1
                     WHERE rollout_id = $2 AND group_idx = $3 AND state = 'scheduled'",
                )
                .bind(now)
                .bind(rollout)
                .bind(idx)
                .execute(&mut *tx)
                .await?;
            }
            let ev = match to {
                "running" => "group started",
                "finished" => "group finished",
                "error" => "group error threshold reached",
                other => other,
            };
            Self::event(&mut tx, rollout, ev, Some(idx), now).await?;
            // A group in error pauses its rollout in the same transaction: another server's
            // engine pass must never see the group in error while the rollout still runs
            // (it would take the error group as passed and start the next one).
            let paused = if to == "error" {
                let p = sqlx::query(
                    "UPDATE rollouts SET state = 'paused', updated_at = $1
                     WHERE id = $2 AND state = 'running'",
                )
                .bind(now)
                .bind(rollout)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if p == 1 {
                    Self::event(
                        &mut tx,
                        rollout,
                        "paused: error threshold reached",
                        Some(idx),
                        now,
                    )
                    .await?;
                }
                p == 1
            } else {
                false
            };
            tx.commit().await?;
            super::log('I', format_args!("rollout {rollout}: {ev} (group {idx})"));
            if paused {
                super::log(
                    'I',
                    format_args!("rollout {rollout}: paused: error threshold reached"),
                );
            }
            return Ok(true);
        }
        tx.commit().await?;
        Ok(false)
    }
}

/// A database URL fit for messages (the password replaced).
pub fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((cred, host)) = rest.rsplit_once('@') {
            let user = cred.split(':').next().unwrap_or("");
            return format!("{scheme}://{user}:***@{host}");
        }
    }
    url.to_string()
}
