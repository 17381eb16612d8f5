//! `authgate run`: the gateway from a file, with reload on SIGHUP or file change, and graceful
//! shutdown on SIGTERM/SIGINT.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use authgate_proxy::{Gateway, Snapshot};
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Editors write files in several steps; wait for the burst of events to settle.
const RELOAD_DEBOUNCE: Duration = Duration::from_millis(200);

pub async fn run(config: PathBuf, istio: Vec<PathBuf>, drain: Duration) -> anyhow::Result<ExitCode> {
    // Signal handlers first: a signal that arrives once traffic is served must never meet the
    // default action (which would kill the process mid-request).
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let cfg = crate::load(&config, &istio).map_err(|e| anyhow::anyhow!("{e}"))?;
    for note in &cfg.notes {
        tracing::info!("{note}");
    }
    let watched = cfg.files.clone();
    let snapshot = Snapshot::build(cfg).map_err(|e| anyhow::anyhow!("{e}"))?;
    let gateway = Gateway::start(snapshot).await.context("starting listeners")?;
    // Watching starts before the gateway says it is listening: a change made after that line
    // is never missed.
    let (changed_tx, mut changed) = mpsc::channel::<()>(1);
    let mut watcher = watch(&watched, &istio, changed_tx.clone());
    for addr in gateway.local_addrs() {
        tracing::info!(%addr, "authgate listening");
    }
    if let Some(admin) = gateway.admin_addr() {
        tracing::info!(%admin, "admin listening");
    }
    // One shutdown future for the whole loop, raced everywhere the loop waits, so a SIGTERM
    // that lands during a reload's debounce is never lost.
    let shutdown = async {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading");
                reload(&gateway, &config, &istio, &mut watcher, &changed_tx);
            }
            Some(()) = changed.recv() => {
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(RELOAD_DEBOUNCE) => {}
                }
                while changed.try_recv().is_ok() {}
                tracing::info!("configuration files changed: reloading");
                reload(&gateway, &config, &istio, &mut watcher, &changed_tx);
            }
        }
    }
    tracing::info!(drain = ?drain, "shutting down: no new connections, draining in-flight requests");
    gateway.shutdown(drain).await;
    Ok(ExitCode::SUCCESS)
}

/// Watches the directories holding the configuration files (editors replace files by rename,
/// which a watch on the file itself would miss) and signals when a configuration file changes.
fn watch(files: &[PathBuf], istio: &[PathBuf], tx: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
    let set = WatchSet::new(files.iter().chain(istio));
    let dirs: Vec<PathBuf> = set.watched_dirs();
    let handler = move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && set.concerns_config(&event)
        {
            let _ = tx.try_send(());
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "file watching unavailable; reload with SIGHUP");
            return None;
        }
    };
    for d in dirs {
        if let Err(e) = watcher.watch(&d, RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %d.display(), error = %e, "cannot watch");
        }
    }
    Some(watcher)
}

/// What counts as a configuration change. Directories are resolved (symlinks, `..`) so one
/// directory reached by two spellings is watched once and events match whichever spelling the
/// configuration used; the file itself is not resolved, since a Kubernetes volume's file is a
/// symlink into `..data`.
struct WatchSet {
    /// (resolved directory, file name) of each configuration file: the gateway file, its
    /// includes, Istio files, certificates, keys and CAs.
    files: std::collections::HashSet<(PathBuf, std::ffi::OsString)>,
    /// Resolved Istio directories: any `*.yaml` / `*.yml` file in them (not hidden ones, which
    /// the loader skips too).
    yaml_dirs: std::collections::HashSet<PathBuf>,
}

impl WatchSet {
    fn new<'a>(targets: impl Iterator<Item = &'a PathBuf>) -> Self {
        let mut set = Self {
            files: std::collections::HashSet::new(),
            yaml_dirs: std::collections::HashSet::new(),
        };
        for t in targets {
            let t = absolute(t);
            if t.is_dir() {
                set.yaml_dirs.insert(resolved(&t));
            } else if let (Some(dir), Some(name)) = (t.parent(), t.file_name()) {
                set.files.insert((resolved(dir), name.to_os_string()));
            }
        }
        set
    }

    fn watched_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self
            .files
            .iter()
            .map(|(d, _)| d.clone())
            .chain(self.yaml_dirs.iter().cloned())
            .collect();
        dirs.sort();
        dirs.dedup();
        dirs
    }

    /// A change to a configuration file, or to a `..`-prefixed entry: Kubernetes updates a
    /// mounted ConfigMap or Secret by swapping its `..data` symlink, which never names the file
    /// itself. Anything else in the same directory (the gateway's own log file, an editor's
    /// swap file) is ignored: reacting to it would rebuild the configuration, and drop every
    /// pooled connection, on each write (a reload loop when the log lives next to the config).
    fn concerns_config(&self, event: &notify::Event) -> bool {
        if event.kind.is_access() {
            return false;
        }
        // No path: the watcher lost track (queue overflow); reload to be safe.
        event.paths.is_empty() || event.paths.iter().any(|p| self.concerns(p))
    }

    fn concerns(&self, path: &Path) -> bool {
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return true;
        };
        let bytes = name.as_encoded_bytes();
        if bytes.starts_with(b"..") {
            return true;
        }
        // Events carry the watched (resolved) directory's spelling.
        let dir = dir.to_path_buf();
        if self.files.contains(&(dir.clone(), name.to_os_string())) {
            return true;
        }
        let yaml = Path::new(name)
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"));
        yaml && !bytes.starts_with(b".") && self.yaml_dirs.contains(&dir)
    }
}

/// The directory with symlinks and `..` resolved, or as given when it cannot be.
fn resolved(dir: &Path) -> PathBuf {
    std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf())
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Loads and swaps in the configuration; on success the watch follows the new set of files
/// (an include added, a certificate moved).
fn reload(
    gateway: &Gateway,
    config: &Path,
    istio: &[PathBuf],
    watcher: &mut Option<notify::RecommendedWatcher>,
    changed: &mpsc::Sender<()>,
) {
    let loaded = crate::load(config, istio).and_then(|c| {
        let files = c.files.clone();
        Snapshot::build(c).map(|s| (s, files)).map_err(|e| e.to_string())
    });
    match loaded {
        Ok((s, files)) => {
            gateway.reload(s);
            tracing::info!("configuration reloaded");
            if watcher.is_some() {
                *watcher = watch(&files, istio, changed.clone());
            }
        }
        Err(e) => {
            gateway.reload_rejected();
            tracing::error!("reload failed, keeping the previous configuration:\n{e}");
        }
    }
}

/// SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}
