//! The appliance server: REST API with JWT authentication and roles, the
//! control-plane store (SQLite), the audit log, incidents, the live stream
//! and monitoring endpoints, served by axum.
//!
//! Shape: [`routes::table`] is the one list of every route with the roles
//! allowed on it; the router is built from it and a guard layer checks each
//! request against it, so a route cannot exist without an access rule.
//! Handlers are thin: they validate input, call the store or the engine
//! link, and audit what changes.
//!
//! Architecture Invariant: the API never sits on the packet path. It reads
//! the engine's counters and alert feed, queries history through
//! `tapstream-query`, and changes detection only through files the engine
//! already watches (rules file, blocklist feed).

#![forbid(unsafe_code)]

pub mod auth;
pub mod cache;
pub mod console;
pub mod engine;
pub mod error;
pub mod keys;
pub mod monitor;
pub mod openapi;
pub mod report;
pub mod routes;
pub mod store;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use engine::{EngineLink, EngineStatus};
pub use error::{ApiError, Error};
pub use store::Store;

/// Does any user exist? (First start creates an admin when none does.)
pub fn has_users(store: &Store) -> Result<bool, Error> {
    Ok(store.with(|c| c.query_row("SELECT EXISTS (SELECT 1 FROM users)", [], |r| r.get::<_, bool>(0)))?)
}

use auth::AuthConfig;

/// What the server needs to know.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub auth: AuthConfig,
    /// Largest request body accepted (uploads have their own limit).
    pub max_body: usize,
    /// The rules file the API manages (detection reloads it on change).
    pub rules_file: PathBuf,
    /// The blocklist, written as a plain feed detection reloads.
    pub blocklist_file: PathBuf,
    pub sql: tapstream_query::Guardrails,
    /// The plugin directory (None: plugins off).
    pub plugins_dir: Option<PathBuf>,
    /// Largest plugin upload body.
    pub max_upload: usize,
    /// Largest import upload (CSV or capture file).
    pub max_import: u64,
    /// How long generated reports are kept and how much room they take.
    pub reports: report::schedule::ReportsConfig,
}

impl ApiConfig {
    /// Defaults for a data directory.
    pub fn for_data_dir(data: &Path) -> ApiConfig {
        ApiConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: data.to_path_buf(),
            auth: AuthConfig::default(),
            max_body: 1 << 20,
            rules_file: data.join("api").join("rules.toml"),
            blocklist_file: data.join("api").join("blocklist.txt"),
            sql: tapstream_query::Guardrails::default(),
            plugins_dir: Some(data.join("plugins")),
            max_upload: 16 << 20,
            max_import: 256 << 20,
            reports: report::schedule::ReportsConfig::default(),
        }
    }
    pub fn store_path(&self) -> PathBuf {
        self.data_dir.join("control.db")
    }
    pub fn key_path(&self) -> PathBuf {
        self.data_dir.join("secret.key")
    }
}

/// Shared by every handler.
pub struct Inner {
    pub cfg: ApiConfig,
    pub store: Store,
    pub keys: keys::Keys,
    pub engine: EngineLink,
    pub history: tokio::sync::OnceCell<tapstream_query::History>,
    pub started: std::time::Instant,
    pub monitor: Arc<monitor::Monitor>,
    /// The OpenAPI document, built once.
    pub openapi: serde_json::Value,
    access: routes::AccessMap,
    /// Alert events from the history of before this start (read once).
    pub past_alerts: tokio::sync::OnceCell<Vec<tapstream_engine::alert::Alert>>,
    /// History queries run here, on threads of their own, so a heavy query
    /// never holds up the requests the server's own threads answer.
    pub query_rt: tokio::runtime::Handle,
    /// `/api/traffic` answers shared by dashboards polling the same view.
    pub traffic_cache: cache::AnswerCache,
    /// Held while an import runs (one at a time).
    pub importing: tokio::sync::Mutex<()>,
}

#[derive(Clone)]
pub struct AppState(pub Arc<Inner>);

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// The server before the engine runs: store and key file open, and the
/// files detection reads (rules, blocklist) written from the store, so the
/// engine starts with them.
pub struct Prepared {
    cfg: ApiConfig,
    store: Store,
    keys: keys::Keys,
}

impl Prepared {
    /// Open the store and the key file (creating both on first start).
    pub fn open(cfg: ApiConfig) -> Result<Prepared, Error> {
        std::fs::create_dir_all(&cfg.data_dir)?;
        // Uploads a stopped server left half-imported are gone with it.
        let _ = std::fs::remove_dir_all(cfg.data_dir.join("api").join("imports"));
        let store = Store::open(&cfg.store_path())?;
        let keys = keys::Keys::load_or_create(&cfg.key_path())?;
        routes::rules::import_existing(&store, &cfg.rules_file)?;
        routes::rules::write_rules_file(&store, &cfg.rules_file)?;
        routes::blocklist::write_blocklist_file(&store, &cfg.blocklist_file)?;
        Ok(Prepared { cfg, store, keys })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Settings changed through the API (applied over the config file's).
    pub fn stored_settings(&self) -> Result<routes::settings::Stored, ApiError> {
        routes::settings::stored(&self.store, &self.keys)
    }

    /// Attach the running engine's handles and start sampling them.
    pub fn start(self, engine: EngineLink) -> Result<AppState, Error> {
        let monitor = Arc::new(monitor::Monitor::default());
        monitor::spawn(&monitor, engine.clone(), self.cfg.data_dir.clone())?;
        let reports = self.cfg.reports.clone();
        let st = AppState(Arc::new(Inner {
            monitor,
            openapi: openapi::document(),
            access: routes::access_map(),
            cfg: self.cfg,
            store: self.store,
            keys: self.keys,
            engine,
            history: tokio::sync::OnceCell::new(),
            importing: tokio::sync::Mutex::new(()),
            traffic_cache: cache::AnswerCache::default(),
            query_rt: query_runtime()?,
            past_alerts: tokio::sync::OnceCell::new(),
            started: std::time::Instant::now(),
        }));
        report::schedule::spawn(Arc::downgrade(&st.0), reports)?;
        Ok(st)
    }
}

/// A runtime for history queries (two threads), kept alive by a thread of
/// its own for the life of the process.
fn query_runtime() -> Result<tokio::runtime::Handle, Error> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("history-query")
        .enable_all()
        .build()?;
    let h = rt.handle().clone();
    std::thread::Builder::new().name("history-rt".into()).spawn(move || rt.block_on(std::future::pending::<()>()))?;
    Ok(h)
}

impl AppState {
    /// Run `f` (a history query) on the query runtime and wait for it.
    pub async fn on_history<T, F, Fut>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(AppState) -> Fut,
        Fut: std::future::Future<Output = Result<T, ApiError>> + Send + 'static,
    {
        self.query_rt.spawn(f(self.clone())).await.map_err(ApiError::internal)?
    }

    /// Open and start in one step (no engine: `EngineLink::default()`).
    pub fn open(cfg: ApiConfig, engine: EngineLink) -> Result<AppState, Error> {
        Prepared::open(cfg)?.start(engine)
    }

    /// The history (opened on first use).
    pub async fn history(&self) -> Result<&tapstream_query::History, ApiError> {
        self.history
            .get_or_try_init(|| async {
                let h = tapstream_query::History::open(&self.cfg.data_dir, self.cfg.sql.clone()).await?;
                if let Some(g) = &self.engine.geo {
                    h.set_geo(g.clone());
                }
                Ok::<_, ApiError>(h)
            })
            .await
    }

    pub fn router(&self) -> axum::Router {
        routes::router(self.clone())
    }
}

/// Serve until `shutdown` resolves.
pub async fn serve(
    st: AppState,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = st.router();
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await
}
