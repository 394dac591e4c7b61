//! Start the real server in-process on port 0, for tests (this crate's,
//! the admin CLI's, and embedding apps').

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use session_core::{Clock, SystemClock};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::{ConfigError, RawSettings};
use crate::startup::StartupError;
use crate::state::AppState;

/// A running server on two loopback ports with its own data directory.
#[derive(Debug)]
pub struct TestServer {
    public: SocketAddr,
    admin: SocketAddr,
    admin_token: String,
    data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), StartupError>>>,
    state: AppState,
}

impl TestServer {
    /// Starts a server with default settings in a fresh temp data dir.
    pub async fn start() -> Result<Self, StartupError> {
        Self::start_with(|_| Ok(())).await
    }

    /// Starts a server in a fresh temp data dir after `configure` adjusts
    /// the settings.
    pub async fn start_with(
        configure: impl FnOnce(&mut RawSettings) -> Result<(), ConfigError>,
    ) -> Result<Self, StartupError> {
        let tmp = tempfile::tempdir().map_err(|source| StartupError::Io {
            what: "cannot create a temp dir",
            path: std::env::temp_dir(),
            source,
        })?;
        let dir = tmp.path().to_owned();
        let mut server = Self::start_in(&dir, configure).await?;
        server._tmp = Some(tmp);
        Ok(server)
    }

    /// Starts a server on an existing data dir (for restart tests).
    pub async fn start_in(
        data_dir: &Path,
        configure: impl FnOnce(&mut RawSettings) -> Result<(), ConfigError>,
    ) -> Result<Self, StartupError> {
        Self::start_in_with_clock(data_dir, Arc::new(SystemClock), configure).await
    }

    /// [`TestServer::start_in`] on the given clock (a manual one moves key
    /// schedules and lifetimes without sleeping).
    pub async fn start_in_with_clock(
        data_dir: &Path,
        clock: Arc<dyn Clock>,
        configure: impl FnOnce(&mut RawSettings) -> Result<(), ConfigError>,
    ) -> Result<Self, StartupError> {
        let mut raw = RawSettings::defaults();
        raw.set("data_dir", data_dir.display().to_string())?;
        raw.set("public_addr", "127.0.0.1:0")?;
        raw.set("admin_addr", "127.0.0.1:0")?;
        configure(&mut raw)?;
        let settings = raw.parse()?;
        let backends = crate::compose::open_backends(&settings).await?;
        let admin_token = crate::state::admin_token(&settings)?;
        let state = AppState::open(settings.clone(), backends, clock).await?;
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartupError::Listen {
                    addr: addr.to_string(),
                    source,
                })
        };
        let public = bind(settings.public_addr).await?;
        let admin = bind(settings.admin_addr).await?;
        let public_addr = public.local_addr().map_err(|source| StartupError::Listen {
            addr: settings.public_addr.to_string(),
            source,
        })?;
        let admin_addr = admin.local_addr().map_err(|source| StartupError::Listen {
            addr: settings.admin_addr.to_string(),
            source,
        })?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(crate::app::serve(
            state.clone(),
            public,
            admin,
            async move {
                let _ = stopped.await;
            },
        ));
        Ok(Self {
            public: public_addr,
            admin: admin_addr,
            admin_token,
            data_dir: data_dir.to_owned(),
            _tmp: None,
            stop: Some(stop),
            task: Some(task),
            state,
        })
    }

    /// `http://127.0.0.1:PORT` of the public listener.
    pub fn public_url(&self) -> String {
        format!("http://{}", self.public)
    }

    /// `http://127.0.0.1:PORT` of the admin listener.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin)
    }

    /// The admin bearer token.
    pub fn admin_token(&self) -> String {
        self.admin_token.clone()
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The server's state (service, settings).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
