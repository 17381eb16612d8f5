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
    for addr in gateway.local_addrs() {
        tracing::info!(%addr, "authgate listening");
    }
    if let Some(admin) = gateway.admin_addr() {
        tracing::info!(%admin, "admin listening");
    }
    let (changed_tx, mut changed) = mpsc::channel::<()>(1);
    let mut watcher = watch(&watched, &istio, changed_tx);
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
                reload(&gateway, &config, &istio, &mut watcher);
            }
            Some(()) = changed.recv() => {
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(RELOAD_DEBOUNCE) => {}
                }
                while changed.try_recv().is_ok() {}
                tracing::info!("configuration files changed: reloading");
                reload(&gateway, &config, &istio, &mut watcher);
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
    let targets: Vec<PathBuf> = files.iter().chain(istio).map(|p| absolute(p)).collect();
    let handler = {
        let targets = targets.clone();
        move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event
                && concerns_config(&event, &targets)
            {
                let _ = tx.try_send(());
            }
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "file watching unavailable; reload with SIGHUP");
            return None;
        }
    };
    let mut dirs: Vec<PathBuf> = targets
        .iter()
        .map(|t| {
            if t.is_dir() {
                t.clone()
            } else {
                t.parent().map_or_else(|| t.clone(), Path::to_path_buf)
            }
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    for d in dirs {
        if let Err(e) = watcher.watch(&d, RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %d.display(), error = %e, "cannot watch");
        }
    }
    Some(watcher)
}

/// A change to one of the configuration files (a path in `targets`, or inside a watched
/// directory given as a target), or to a `..`-prefixed entry: Kubernetes updates a mounted
/// ConfigMap or Secret by swapping its `..data` symlink, which never names the file itself.
/// Anything else in the same directory (the gateway's own log file, an editor's swap file) is
/// ignored: reacting to it would rebuild the configuration, and drop every pooled connection,
/// on each write (a reload loop when the log lives next to the config).
fn concerns_config(event: &notify::Event, targets: &[PathBuf]) -> bool {
    if event.kind.is_access() {
        return false;
    }
    // No path: the watcher lost track (queue overflow); reload to be safe.
    event.paths.is_empty()
        || event.paths.iter().any(|p| {
            targets
                .iter()
                .any(|t| p == t || (t.is_dir() && p.parent() == Some(t.as_path())))
                || p.file_name()
                    .is_some_and(|n| n.as_encoded_bytes().starts_with(b".."))
        })
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

fn reload(
    gateway: &Gateway,
    config: &Path,
    istio: &[PathBuf],
    _watcher: &mut Option<notify::RecommendedWatcher>,
) {
    match crate::load(config, istio).and_then(|c| Snapshot::build(c).map_err(|e| e.to_string())) {
        Ok(s) => {
            gateway.reload(s);
            tracing::info!("configuration reloaded");
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
