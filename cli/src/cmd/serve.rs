//! `glint serve <MANIFEST>` and `glint serve --guest <GUEST>`

use crate::failure::{one_line, Failure};
use crate::serve::backend::StartError;
use crate::serve::front::{self, Stopped};
use crate::serve::manifest::{self, Manifest, ManifestError};
use crate::serve::{App, ServeError};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// Serves the functions of a manifest over HTTP, each request in a freshly restored VM; or, with
/// --guest, every export of one guest at POST /call/<export>. Logs go to stderr (filter with
/// GLINT_LOG, e.g. GLINT_LOG=debug or GLINT_LOG=glint=warn,info); stdout gets one line,
/// `listening on http://ADDR`, once the port is open. SIGTERM or SIGINT stops accepting, lets
/// in-flight requests finish within the grace period and exits 0.
#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("what").required(true).args(["manifest", "guest"]))]
pub struct Args {
    /// The deployment manifest (TOML).
    pub manifest: Option<PathBuf>,
    /// Quick mode: serve this guest's exports at POST /call/<export>, with default limits.
    #[arg(long, value_name = "GUEST", conflicts_with = "manifest")]
    pub guest: Option<PathBuf>,
    /// Address to listen on (port 0 picks a free port; the line on stdout tells which).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Quick mode's trust options (a manifest has its own `[trust]`, `digest` and `signature`).
    #[command(flatten)]
    pub trust: crate::trust::TrustArgs,
    /// Crash dumps of faulting calls, for every function served.
    #[command(flatten)]
    pub core_dumps: super::CoreDumpOptions,
}

pub fn run(a: Args) -> Result<(), Failure> {
    let _log = crate::logging::init();
    let mut manifest = match (&a.manifest, &a.guest) {
        (Some(_), _) if !a.trust.is_empty() => {
            return Err(Failure::usage(
                "--key, --signature and --digest are for --guest; a manifest has [trust], digest and signature",
            ));
        }
        (Some(path), _) => manifest::load(path).map_err(|e| failure(ServeError::Manifest(e)))?,
        (None, Some(guest)) => {
            let mut m = manifest::quick(guest);
            a.trust.apply_to_quick(&mut m);
            m
        }
        (None, None) => return Err(Failure::usage("give a manifest or --guest <GUEST>")),
    };
    // Deploy-time policy (trust): refuse to start on any violation, with the same lines as
    // `glint policy check`.
    super::policy::enforce(&manifest)?;
    manifest.server.core_dumps = a.core_dumps.config()?;
    serve(&manifest, a.listen).map_err(failure)
}

/// Starts the runtime, prepares every function, serves until SIGTERM or SIGINT.
fn serve(manifest: &Manifest, listen: SocketAddr) -> Result<(), ServeError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(manifest::cpus())
        .thread_name("glint-io")
        .enable_all()
        .build()
        .map_err(ServeError::Threads)?;
    let app = Arc::new(App::new(manifest)?);
    let stopped = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| ServeError::Bind { addr: listen.to_string(), source })?;
        let local = listener.local_addr().map_err(|source| ServeError::Bind { addr: listen.to_string(), source })?;
        tracing::info!(functions = app.functions.len(), "listening on http://{local}");
        println!("listening on http://{local}");
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        Ok::<_, ServeError>(front::serve(Arc::clone(&app), listener, stop_signal()).await)
    })?;
    match stopped {
        Stopped::Drained => tracing::info!("every in-flight request finished; exiting"),
        Stopped::GraceExpired => {
            tracing::warn!("the grace period ended with requests still running; exiting anyway")
        }
    }
    app.close();
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    Ok(())
}

/// Completes at the first SIGTERM or SIGINT.
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install the SIGTERM/SIGINT handlers; stop the server with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
}

/// The exit status of a start failure: 2 for the manifest or the address, 3 for an image, 4 for
/// KVM, 1 for a guest that failed to initialise.
fn failure(e: ServeError) -> Failure {
    match &e {
        ServeError::Manifest(ManifestError::Invalid { problems }) => {
            Failure::usage(problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))
        }
        ServeError::Manifest(ManifestError::Read { .. }) => Failure { status: 3, message: one_line(&e) },
        ServeError::Start(start @ StartError::Glint { .. }) => {
            let status = start.glint().map_or(1, Failure::from_glint_status);
            Failure { status, message: one_line(&e) }
        }
        ServeError::Start(StartError::Refused { .. } | StartError::Ungranted { .. }) => {
            Failure { status: 3, message: e.to_string() }
        }
        ServeError::Capabilities { .. } => Failure::usage(one_line(&e)),
        // A refused image is 3 like everywhere else; a registry that fails is 5 (as `glint pull`).
        ServeError::Start(StartError::Image(crate::trust::ImageLoadError::Registry { source, .. }))
            if !matches!(**source, crate::registry::RegistryError::Trust(_)) =>
        {
            Failure { status: 5, message: one_line(&e) }
        }
        ServeError::Start(StartError::Image(_)) => Failure { status: 3, message: one_line(&e) },
        ServeError::Bind { .. } => Failure::usage(one_line(&e)),
        ServeError::Threads(_) => Failure { status: 4, message: one_line(&e) },
    }
}
