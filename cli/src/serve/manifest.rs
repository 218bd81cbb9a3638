//! The deployment manifest (TOML): `[server]` limits, `[[function]]` tables, and the sections the
//! capability and trust code read. Parsed with serde, checked as a whole before anything runs:
//! every problem is one line `FILE:LINE: ...` naming the key.

use super::route::RoutePattern;
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("cannot read manifest {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is wrong: one entry per problem, each naming the key and the line.
    #[error("{}", problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

/// One problem in a manifest, at a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The manifest's file name as given.
    pub file: String,
    /// 1-based line (0 when unknown).
    pub line: usize,
    /// What is wrong, naming the key.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}:{}: {}", self.file, self.line, self.message)
        }
    }
}

/// Server-wide limits (`[server]`). Every field has a documented default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Largest request body; a larger one gets 413 (at once when Content-Length says so).
    pub max_body_bytes: u64,
    /// Largest request head (request line and headers); more gets 431.
    pub max_header_bytes: usize,
    /// Most request headers; more gets 431.
    pub max_headers: usize,
    /// Time a client has to send a complete request head, also the idle keep-alive timeout.
    pub header_read_timeout: Duration,
    /// Time a client has to send the body once the head is complete; then 408.
    pub body_read_timeout: Duration,
    /// Most connections open at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// After SIGTERM, how long in-flight requests may take before the server exits anyway.
    pub grace_period: Duration,
    /// Worker threads each function gets unless it sets `max_concurrency`.
    pub worker_threads: usize,
    /// Where the key-value stores live (relative paths are relative to the manifest).
    pub data_dir: PathBuf,
    /// Policy (trust): the most memory a function may ask for; above it `glint policy check`
    /// denies the deployment (rule `max_memory`).
    pub max_memory_mib: u64,
    /// Policy (trust): the longest per-request timeout a function may ask for (rule `max_timeout`).
    pub max_timeout: Duration,
    /// Where faulting calls leave core files, and their bounds: set by `serve --core-dump`, not
    /// by the manifest (a deployment file does not choose where the host writes crash dumps).
    pub core_dumps: Option<(PathBuf, glint::CoreDumpLimits)>,
}

/// The number of CPUs this process may use (at least 1).
pub fn cpus() -> usize {
    std::thread::available_parallelism().map(usize::from).unwrap_or(1)
}

impl ServerConfig {
    /// The defaults, with relative paths resolved against `dir`.
    pub fn defaults(dir: &Path) -> ServerConfig {
        ServerConfig {
            max_body_bytes: 1 << 20,
            max_header_bytes: 16 << 10,
            max_headers: 100,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            max_connections: 512,
            grace_period: Duration::from_secs(25),
            worker_threads: cpus(),
            data_dir: dir.join("data"),
            max_memory_mib: DEFAULT_MAX_MEMORY_MIB,
            max_timeout: Duration::from_millis(DEFAULT_MAX_TIMEOUT_MS),
            core_dumps: None,
        }
    }
}

/// What a function's route serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FunctionKind {
    /// An HTTP handler export `(Vec<u8>) -> Vec<u8>` receiving the encoded request.
    Http {
        /// The export's name (default `handle`).
        handler: String,
    },
    /// Typed exports called as `POST <route>/call/<export>` with a JSON array of arguments.
    Typed {
        /// The exports that may be called (`None`: all).
        exports: Option<Vec<String>>,
    },
}

/// Where a function's image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// A file (relative paths are relative to the manifest).
    File(PathBuf),
    /// An OCI reference `oci://host[:port]/repository:tag` or `...@sha256:HEX` (Trust issue).
    Oci(String),
}

/// One `[[function]]`, checked.
#[derive(Debug, Clone)]
pub struct FunctionSpec {
    /// Name: metric label, log field, capability owner.
    pub name: String,
    /// Line of its `[[function]]` table.
    pub line: usize,
    /// The image.
    pub image: ImageSource,
    /// `sha256:HEX` pin of the image file.
    pub digest: Option<String>,
    /// Signature file (cosign sign-blob format), relative to the manifest.
    pub signature: Option<PathBuf>,
    /// Snapshot file (`glint snapshot`) of the image to start from instead of initialising it;
    /// it must hold the image's code, and is held to `[trust]` as the image is.
    pub snapshot: Option<PathBuf>,
    /// `sha256:HEX` pin of the snapshot file.
    pub snapshot_digest: Option<String>,
    /// Signature of the snapshot file, relative to the manifest.
    pub snapshot_signature: Option<PathBuf>,
    /// The route.
    pub route: RoutePattern,
    /// Handler or typed calls.
    pub kind: FunctionKind,
    /// Guest memory in MiB.
    pub memory_mib: u64,
    /// Deadline of each guest call.
    pub timeout: Duration,
    /// Requests running at once (and worker threads of this function).
    pub max_concurrency: usize,
    /// Requests waiting beyond those; more get 503 at once.
    pub queue: usize,
    /// Ready sandboxes kept ahead of demand.
    pub pool_ready: usize,
    /// Most sandboxes the function's pool owns.
    pub pool_max: usize,
    /// Largest response body (or typed result) the guest may return; more is a 500.
    pub max_response_bytes: usize,
    /// Log bytes one request may write; what a line past it does is `log_overflow`.
    pub max_log_bytes: u64,
    /// `log_overflow = "drop"` (the default: the line is dropped, the call goes on) or `"fail"`
    /// (the call ends with the log quota's error).
    pub log_overflow: glint::LogOverflow,
    /// Host calls one request may make; more ends the call.
    pub max_host_calls: u64,
    /// What `[function.capabilities]` grants.
    pub grants: glint_caps::Grants,
    /// `[function.variables]`: readable by the function through `glint:variables/get@1`.
    pub variables: glint_caps::Variables,
}

impl FunctionSpec {
    /// The pattern the router matches: the route itself for a handler, `<route>/call/:export`
    /// for typed calls.
    pub fn pattern(&self) -> RoutePattern {
        match self.kind {
            FunctionKind::Http { .. } => self.route.clone(),
            FunctionKind::Typed { .. } => self.route.typed_calls(),
        }
    }
}

/// `[trust]`: accepted and checked here; the Trust issue gives it effect.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustConfig {
    /// Public keys (SPKI PEM files), relative to the manifest.
    pub keys: Vec<PathBuf>,
    /// Whether every image must be signed (default: true when keys are configured).
    pub require_signatures: Option<bool>,
    /// Whether every image must have a digest pin.
    pub require_digests: Option<bool>,
    /// Whether outbound host patterns as broad as `*` are allowed (policy rule `outbound_hosts`).
    pub allow_broad_outbound: bool,
    /// Registry hosts (`host:port`) that `oci://` images may be pulled from over plain HTTP.
    pub insecure_http_registries: Vec<String>,
    /// Where audit events go: a path relative to the manifest, `-` for stdout, `None` for
    /// tracing only.
    pub audit_log: Option<String>,
}

/// A whole manifest, checked.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The file as given (for policy messages).
    pub file: String,
    /// The manifest's directory (the audit log path is relative to it).
    pub dir: PathBuf,
    /// Server limits.
    pub server: ServerConfig,
    /// Trust settings, if the section is present.
    pub trust: Option<TrustConfig>,
    /// The top-level `[capabilities]` settings (store quotas, outbound defaults).
    pub capabilities: glint_caps::CapsConfig,
    /// The functions, in file order.
    pub functions: Vec<FunctionSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    #[serde(default)]
    server: Option<Spanned<RawServer>>,
    #[serde(default)]
    trust: Option<Spanned<RawTrust>>,
    #[serde(default)]
    capabilities: Option<Spanned<glint_caps::CapsConfig>>,
    #[serde(default)]
    function: Vec<Spanned<RawFunction>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    max_body_bytes: Option<Spanned<u64>>,
    max_header_bytes: Option<Spanned<u64>>,
    max_headers: Option<Spanned<u64>>,
    header_read_timeout_ms: Option<Spanned<u64>>,
    body_read_timeout_ms: Option<Spanned<u64>>,
    max_connections: Option<Spanned<u64>>,
    grace_period_ms: Option<Spanned<u64>>,
    worker_threads: Option<Spanned<u64>>,
    data_dir: Option<Spanned<String>>,
    max_memory_mib: Option<Spanned<u64>>,
    max_timeout_ms: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrust {
    #[serde(default)]
    keys: Vec<Spanned<String>>,
    require_signatures: Option<bool>,
    require_digests: Option<bool>,
    #[serde(default)]
    allow_broad_outbound: bool,
    #[serde(default)]
    insecure_http_registries: Vec<String>,
    audit_log: Option<Spanned<String>>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum RawKind {
    Http,
    Typed,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum RawLogOverflow {
    Drop,
    Fail,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPool {
    ready: Option<Spanned<u64>>,
    max: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFunction {
    name: Spanned<String>,
    image: Spanned<String>,
    digest: Option<Spanned<String>>,
    signature: Option<Spanned<String>>,
    snapshot: Option<Spanned<String>>,
    snapshot_digest: Option<Spanned<String>>,
    snapshot_signature: Option<Spanned<String>>,
    route: Spanned<String>,
    kind: Spanned<RawKind>,
    handler: Option<Spanned<String>>,
    exports: Option<Spanned<Vec<String>>>,
    memory_mib: Option<Spanned<u64>>,
    timeout_ms: Option<Spanned<u64>>,
    max_concurrency: Option<Spanned<u64>>,
    queue: Option<Spanned<u64>>,
    pool: Option<Spanned<RawPool>>,
    max_response_bytes: Option<Spanned<u64>>,
    max_log_bytes: Option<Spanned<u64>>,
    log_overflow: Option<Spanned<RawLogOverflow>>,
    max_host_calls: Option<Spanned<u64>>,
    capabilities: Option<Spanned<glint_caps::Grants>>,
    variables: Option<glint_caps::Variables>,
}

/// Defaults of a `[[function]]` (README, "Serve functions over HTTP").
pub const DEFAULT_MEMORY_MIB: u64 = 16;
/// Default per-request deadline.
pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;
/// Default requests waiting beyond those running.
pub const DEFAULT_QUEUE: u64 = 64;
/// Default largest response.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 1 << 20;
/// Default log budget per request.
pub const DEFAULT_MAX_LOG_BYTES: u64 = 64 << 10;
/// Default host calls per request.
pub const DEFAULT_MAX_HOST_CALLS: u64 = 100_000;
/// Default `[server] max_memory_mib` (policy): the largest `memory_mib` a function may set. The
/// defaults of both maxima are the manifest's own bounds, so nothing is denied until an operator
/// lowers them.
pub const DEFAULT_MAX_MEMORY_MIB: u64 = 256;
/// Default `[server] max_timeout_ms` (policy): the longest `timeout_ms` a function may set.
pub const DEFAULT_MAX_TIMEOUT_MS: u64 = 3_600_000;

/// The manifest of quick mode (`glint serve --guest G`): one typed function at `/`, so every
/// export answers `POST /call/<export>`, with the default limits.
pub fn quick(guest: &Path) -> Manifest {
    let dir = PathBuf::from(".");
    let server = ServerConfig::defaults(&dir);
    let stem = guest.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    let name = if valid_name(stem) { stem.to_owned() } else { "guest".to_owned() };
    let n = server.worker_threads;
    let function = FunctionSpec {
        name,
        line: 0,
        image: ImageSource::File(guest.to_owned()),
        digest: None,
        signature: None,
        snapshot: None,
        snapshot_digest: None,
        snapshot_signature: None,
        route: RoutePattern::root(),
        kind: FunctionKind::Typed { exports: None },
        memory_mib: DEFAULT_MEMORY_MIB,
        timeout: Duration::from_millis(DEFAULT_TIMEOUT_MS),
        max_concurrency: n,
        queue: DEFAULT_QUEUE as usize,
        pool_ready: n,
        pool_max: n,
        max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES as usize,
        max_log_bytes: DEFAULT_MAX_LOG_BYTES,
        log_overflow: glint::LogOverflow::DropLines,
        max_host_calls: DEFAULT_MAX_HOST_CALLS,
        grants: glint_caps::Grants::default(),
        variables: glint_caps::Variables::default(),
    };
    Manifest {
        file: guest.display().to_string(),
        dir,
        server,
        trust: None,
        capabilities: glint_caps::CapsConfig::default(),
        functions: vec![function],
    }
}

/// Paths the server answers itself; no function may take them.
pub const RESERVED_PATHS: &[&str] = &["/healthz", "/readyz", "/metrics"];

/// Collects problems with their lines.
struct Checker<'a> {
    file: &'a str,
    text: &'a str,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes().get(..end).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count() + 1)
    }

    fn at(&mut self, offset: usize, message: impl Into<String>) {
        let line = self.line_of(offset);
        self.problems.push(Problem { file: self.file.to_owned(), line, message: message.into() });
    }

    /// `value` of `key`, checked to lie in `range`; `unit` is appended in the message.
    fn range(
        &mut self,
        key: &str,
        value: &Option<Spanned<u64>>,
        range: std::ops::RangeInclusive<u64>,
        unit: &str,
        default: u64,
    ) -> u64 {
        match value {
            None => default,
            Some(v) if range.contains(v.get_ref()) => *v.get_ref(),
            Some(v) => {
                self.at(
                    v.span().start,
                    format!(
                        "`{key}` = {} is out of range: it must be {}..={}{unit}",
                        v.get_ref(),
                        range.start(),
                        range.end()
                    ),
                );
                default
            }
        }
    }
}

/// Reads and checks the manifest at `path`.
///
/// # Errors
/// The file cannot be read, is not TOML, has an unknown key or a bad value (each with its line).
pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read { path: path.to_owned(), source })?;
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let dir = if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir };
    parse(&text, &path.display().to_string(), &dir)
}

/// Parses and checks manifest text; `file` names it in messages, `dir` resolves relative paths.
///
/// # Errors
/// As [`load`].
pub fn parse(text: &str, file: &str, dir: &Path) -> Result<Manifest, ManifestError> {
    let mut c = Checker { file, text, problems: Vec::new() };
    let raw: RawManifest = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let offset = e.span().map_or(0, |s| s.start);
            let message = describe_toml_error(text, &e, offset);
            c.at(offset, message);
            if e.span().is_none() {
                if let Some(p) = c.problems.last_mut() {
                    p.line = 0;
                }
            }
            return Err(ManifestError::Invalid { problems: c.problems });
        }
    };
    let server = check_server(&mut c, raw.server.as_ref(), dir);
    let trust = raw.trust.as_ref().map(|t| check_trust(&mut c, t, dir));
    if let Some(caps) = &raw.capabilities {
        if let Err(e) = caps.get_ref().validate() {
            c.at(caps.span().start, format!("[capabilities]: {e}"));
        }
    }
    let mut functions: Vec<FunctionSpec> = Vec::new();
    if raw.function.is_empty() {
        c.problems.push(Problem {
            file: file.to_owned(),
            line: 0,
            message: "no [[function]] table: the manifest must declare at least one function".into(),
        });
    }
    for f in &raw.function {
        if let Some(spec) = check_function(&mut c, f, &server, dir) {
            if let Some(other) = functions.iter().find(|o| o.name == spec.name) {
                let message = format!("function name `{}` is already used at line {}", spec.name, other.line);
                c.at(f.get_ref().name.span().start, message);
            } else if let Some(other) = functions.iter().find(|o| o.pattern().same_shape(&spec.pattern())) {
                let message = format!(
                    "`route` = \"{}\" is the same pattern as function `{}`'s \"{}\" (line {})",
                    spec.route, other.name, other.route, other.line
                );
                c.at(f.get_ref().route.span().start, message);
            } else {
                functions.push(spec);
            }
        }
    }
    if !c.problems.is_empty() {
        return Err(ManifestError::Invalid { problems: c.problems });
    }
    Ok(Manifest {
        file: file.to_owned(),
        dir: dir.to_owned(),
        server,
        trust,
        capabilities: raw.capabilities.map(Spanned::into_inner).unwrap_or_default(),
        functions,
    })
}

/// toml's message, made one line and prefixed with the key when serde did not name it (a type
/// error names only the type: find the key left of the `=` on the line).
fn describe_toml_error(text: &str, e: &toml::de::Error, offset: usize) -> String {
    let message = e.message().trim().replace('\n', " ");
    let line_start = text.get(..offset).and_then(|t| t.rfind('\n')).map_or(0, |i| i + 1);
    let line = text.get(line_start..).and_then(|t| t.lines().next()).unwrap_or("");
    match line.split_once('=') {
        Some((key, _))
            if !key.trim().is_empty()
                && !key.trim().starts_with('[')
                && !message.contains(&format!("`{}`", key.trim())) =>
        {
            format!("`{}`: {message}", key.trim())
        }
        _ => message,
    }
}

fn check_server(c: &mut Checker<'_>, raw: Option<&Spanned<RawServer>>, dir: &Path) -> ServerConfig {
    let d = ServerConfig::defaults(dir);
    let Some(raw) = raw else { return d };
    let s = raw.get_ref();
    let ms = Duration::from_millis;
    let max_threads = 1024;
    ServerConfig {
        max_body_bytes: c.range("max_body_bytes", &s.max_body_bytes, 0..=(64 << 20), " bytes", d.max_body_bytes),
        max_header_bytes: c.range(
            "max_header_bytes",
            &s.max_header_bytes,
            1024..=(1 << 20),
            " bytes",
            d.max_header_bytes as u64,
        ) as usize,
        max_headers: c.range("max_headers", &s.max_headers, 1..=10_000, "", d.max_headers as u64) as usize,
        header_read_timeout: ms(c.range(
            "header_read_timeout_ms",
            &s.header_read_timeout_ms,
            1..=3_600_000,
            " ms",
            d.header_read_timeout.as_millis() as u64,
        )),
        body_read_timeout: ms(c.range(
            "body_read_timeout_ms",
            &s.body_read_timeout_ms,
            1..=3_600_000,
            " ms",
            d.body_read_timeout.as_millis() as u64,
        )),
        max_connections: c.range("max_connections", &s.max_connections, 1..=1_000_000, "", d.max_connections as u64)
            as usize,
        grace_period: ms(c.range(
            "grace_period_ms",
            &s.grace_period_ms,
            0..=3_600_000,
            " ms",
            d.grace_period.as_millis() as u64,
        )),
        worker_threads: c.range("worker_threads", &s.worker_threads, 1..=max_threads, "", d.worker_threads as u64)
            as usize,
        data_dir: match &s.data_dir {
            None => d.data_dir,
            Some(p) if p.get_ref().is_empty() => {
                c.at(p.span().start, "`data_dir` is empty");
                d.data_dir
            }
            Some(p) => dir.join(p.get_ref()),
        },
        max_memory_mib: c.range("max_memory_mib", &s.max_memory_mib, 1..=256, " MiB", d.max_memory_mib),
        max_timeout: ms(c.range(
            "max_timeout_ms",
            &s.max_timeout_ms,
            1..=3_600_000,
            " ms",
            d.max_timeout.as_millis() as u64,
        )),
        core_dumps: None,
    }
}

fn check_trust(c: &mut Checker<'_>, raw: &Spanned<RawTrust>, dir: &Path) -> TrustConfig {
    let t = raw.get_ref();
    let mut keys = Vec::new();
    for k in &t.keys {
        if k.get_ref().is_empty() {
            c.at(k.span().start, "`keys` holds an empty path");
        } else {
            keys.push(dir.join(k.get_ref()));
        }
    }
    let audit_log = match &t.audit_log {
        Some(p) if p.get_ref().is_empty() => {
            c.at(p.span().start, "`audit_log` is empty (use \"-\" for stdout)");
            None
        }
        Some(p) => Some(p.get_ref().clone()),
        None => None,
    };
    TrustConfig {
        keys,
        require_signatures: t.require_signatures,
        require_digests: t.require_digests,
        allow_broad_outbound: t.allow_broad_outbound,
        insecure_http_registries: t.insecure_http_registries.clone(),
        audit_log,
    }
}

/// Function names become metric labels and log fields: keep them short and plain.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && name.as_bytes().first().is_some_and(u8::is_ascii_alphabetic)
}

/// `sha256:` and 64 lowercase hex digits.
fn valid_digest(d: &str) -> bool {
    d.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

fn check_function(
    c: &mut Checker<'_>,
    raw: &Spanned<RawFunction>,
    server: &ServerConfig,
    dir: &Path,
) -> Option<FunctionSpec> {
    let before = c.problems.len();
    let line = c.line_of(raw.span().start);
    let f = raw.get_ref();
    let name = f.name.get_ref().clone();
    if !valid_name(&name) {
        c.at(
            f.name.span().start,
            format!(
                "`name` = {name:?} is not a valid function name: 1 to 64 ASCII letters, digits, `-` or `_`, starting with a letter"
            ),
        );
    }
    let image = f.image.get_ref();
    let image = if image.is_empty() {
        c.at(f.image.span().start, "`image` is empty");
        ImageSource::File(PathBuf::new())
    } else if let Some(reference) = image.strip_prefix("oci://") {
        if reference.is_empty() || !reference.contains('/') {
            c.at(
                f.image.span().start,
                format!(
                    "`image` = {image:?} is not an OCI reference: oci://host[:port]/repository:tag or ...@sha256:HEX"
                ),
            );
        }
        ImageSource::Oci(reference.to_owned())
    } else if image.contains("://") {
        c.at(f.image.span().start, format!("`image` = {image:?}: only file paths and oci:// references are supported"));
        ImageSource::File(PathBuf::new())
    } else {
        ImageSource::File(dir.join(image))
    };
    // A `sha256:HEX` pin (`digest`, `snapshot_digest`), its form checked.
    let digest_field = |c: &mut Checker<'_>, key: &str, v: &Option<Spanned<String>>| {
        v.as_ref().map(|d| {
            if !valid_digest(d.get_ref()) {
                c.at(
                    d.span().start,
                    format!("`{key}` = {:?} is not `sha256:` and 64 lowercase hex digits", d.get_ref()),
                );
            }
            d.get_ref().clone()
        })
    };
    let digest = digest_field(c, "digest", &f.digest);
    if matches!(image, ImageSource::Oci(_)) && digest.is_none() {
        c.at(
            f.image.span().start,
            "an oci:// `image` needs a `digest` pin (sha256:...) so every node runs the same bytes",
        );
    }
    let path_field = |c: &mut Checker<'_>, key: &str, v: &Option<Spanned<String>>| {
        v.as_ref().and_then(|p| {
            if p.get_ref().is_empty() {
                c.at(p.span().start, format!("`{key}` is empty"));
                None
            } else {
                Some(dir.join(p.get_ref()))
            }
        })
    };
    let signature = path_field(c, "signature", &f.signature);
    let snapshot = path_field(c, "snapshot", &f.snapshot);
    let snapshot_signature = path_field(c, "snapshot_signature", &f.snapshot_signature);
    let snapshot_digest = digest_field(c, "snapshot_digest", &f.snapshot_digest);
    if f.snapshot.is_none() {
        for (key, v) in [("snapshot_digest", &f.snapshot_digest), ("snapshot_signature", &f.snapshot_signature)] {
            if let Some(v) = v {
                c.at(
                    v.span().start,
                    format!("`{key}` applies only with `snapshot` (the snapshot file it pins or signs)"),
                );
            }
        }
    }

    let kind = match f.kind.get_ref() {
        RawKind::Http => {
            if let Some(e) = &f.exports {
                c.at(e.span().start, "`exports` applies to kind = \"typed\" only (an http function has one `handler`)");
            }
            let handler = f.handler.as_ref().map_or_else(|| "handle".to_owned(), |h| h.get_ref().clone());
            if handler.is_empty() {
                c.at(f.handler.as_ref().map_or(0, |h| h.span().start), "`handler` is empty");
            }
            FunctionKind::Http { handler }
        }
        RawKind::Typed => {
            if let Some(h) = &f.handler {
                c.at(h.span().start, "`handler` applies to kind = \"http\" only (a typed function lists `exports`)");
            }
            if let Some(e) = &f.exports {
                if e.get_ref().is_empty() {
                    c.at(e.span().start, "`exports` is empty: leave it out to allow every export");
                }
            }
            FunctionKind::Typed { exports: f.exports.as_ref().map(|e| e.get_ref().clone()) }
        }
    };

    let route = match RoutePattern::parse(f.route.get_ref()) {
        Ok(r) => Some(r),
        Err(e) => {
            c.at(f.route.span().start, format!("`route` = {:?}: {e}", f.route.get_ref()));
            None
        }
    };
    if let Some(r) = &route {
        if matches!(kind, FunctionKind::Typed { .. }) && !r.is_literal() {
            c.at(
                f.route.span().start,
                format!(
                    "`route` = {:?}: a typed function's route is a fixed prefix (calls go to <route>/call/<export>); parameters and `/...` are for kind = \"http\"",
                    f.route.get_ref()
                ),
            );
        }
        if RESERVED_PATHS.iter().any(|p| r.to_string() == *p) {
            c.at(f.route.span().start, format!("`route` = {:?} is reserved for the server itself", f.route.get_ref()));
        }
    }

    let cpus = server.worker_threads as u64;
    let memory_mib = c.range("memory_mib", &f.memory_mib, 1..=256, " MiB", DEFAULT_MEMORY_MIB);
    let timeout = Duration::from_millis(c.range("timeout_ms", &f.timeout_ms, 1..=3_600_000, " ms", DEFAULT_TIMEOUT_MS));
    let max_concurrency = c.range("max_concurrency", &f.max_concurrency, 1..=1024, "", cpus) as usize;
    let queue = c.range("queue", &f.queue, 0..=100_000, "", DEFAULT_QUEUE) as usize;
    let (pool_ready, pool_max) = match &f.pool {
        None => (max_concurrency, max_concurrency),
        Some(p) => {
            let p_ref = p.get_ref();
            let max = c.range("pool.max", &p_ref.max, 1..=4096, "", max_concurrency as u64) as usize;
            let ready = c.range("pool.ready", &p_ref.ready, 0..=4096, "", max.min(max_concurrency) as u64) as usize;
            if ready > max {
                c.at(p.span().start, format!("`pool.ready` = {ready} is more than `pool.max` = {max}"));
            }
            if max < max_concurrency {
                c.at(
                    p.span().start,
                    format!(
                        "`pool.max` = {max} is less than `max_concurrency` = {max_concurrency}: every running request needs its own sandbox"
                    ),
                );
            }
            (ready, max)
        }
    };
    let max_response_bytes =
        c.range("max_response_bytes", &f.max_response_bytes, 0..=(64 << 20), " bytes", DEFAULT_MAX_RESPONSE_BYTES)
            as usize;
    let max_log_bytes = c.range("max_log_bytes", &f.max_log_bytes, 0..=(64 << 20), " bytes", DEFAULT_MAX_LOG_BYTES);
    let log_overflow = match f.log_overflow.as_ref().map(|v| *v.get_ref()) {
        None | Some(RawLogOverflow::Drop) => glint::LogOverflow::DropLines,
        Some(RawLogOverflow::Fail) => glint::LogOverflow::EndCall,
    };
    if let Some(g) = &f.capabilities {
        if let Err(e) = glint_caps::AllowList::parse(&g.get_ref().allowed_outbound_hosts) {
            c.at(g.span().start, format!("[function.capabilities]: {e}"));
        }
        for store in &g.get_ref().key_value_stores {
            if !glint_abi::caps::is_store_name(store) {
                c.at(
                    g.span().start,
                    format!("[function.capabilities]: `key_value_stores` names {store:?}: a store name is 1 to 64 characters of A-Z a-z 0-9 _ . -"),
                );
            }
        }
    }
    let max_host_calls = c.range("max_host_calls", &f.max_host_calls, 0..=(1 << 32), "", DEFAULT_MAX_HOST_CALLS);

    if c.problems.len() != before {
        return None;
    }
    Some(FunctionSpec {
        name,
        line,
        image,
        digest,
        signature,
        snapshot,
        snapshot_digest,
        snapshot_signature,
        route: route?,
        kind,
        memory_mib,
        timeout,
        max_concurrency,
        queue,
        pool_ready,
        pool_max,
        max_response_bytes,
        max_log_bytes,
        log_overflow,
        max_host_calls,
        grants: f.capabilities.as_ref().map(|g| g.get_ref().clone()).unwrap_or_default(),
        variables: f.variables.clone().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        match parse(text, "m.toml", Path::new("/srv")) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(ManifestError::Invalid { problems }) => problems.iter().map(ToString::to_string).collect(),
            Err(e) => panic!("{e}"),
        }
    }

    const MINIMAL: &str = r#"
[[function]]
name = "hello"
image = "guests/hello"
route = "/hello/..."
kind = "http"
"#;

    #[test]
    fn a_minimal_manifest_gets_the_defaults() {
        let m = parse(MINIMAL, "m.toml", Path::new("/srv")).unwrap();
        assert_eq!(m.server, ServerConfig::defaults(Path::new("/srv")));
        let f = &m.functions[0];
        assert_eq!(f.name, "hello");
        assert_eq!(f.line, 2);
        assert_eq!(f.image, ImageSource::File(PathBuf::from("/srv/guests/hello")));
        assert_eq!(f.kind, FunctionKind::Http { handler: "handle".into() });
        assert_eq!(f.timeout, Duration::from_secs(5));
        assert_eq!((f.max_concurrency, f.pool_max), (cpus(), cpus()));
        assert_eq!(f.queue, 64);
    }

    #[test]
    fn unknown_keys_are_named_with_their_line() {
        let text = "[[function]]\nname = \"a\"\nimage = \"x\"\nroute = \"/a\"\nkind = \"http\"\ntiemout_ms = 5\n";
        let p = problems(text);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("m.toml:6: unknown field `tiemout_ms`"), "{p:?}");
        let p =
            problems("[server]\nmax_body = 1\n[[function]]\nname=\"a\"\nimage=\"x\"\nroute=\"/a\"\nkind=\"http\"\n");
        assert!(p[0].starts_with("m.toml:2: unknown field `max_body`"), "{p:?}");
        let p = problems("[sever]\n");
        assert!(p[0].starts_with("m.toml:1: unknown field `sever`"), "{p:?}");
    }

    #[test]
    fn log_overflow_is_drop_or_fail() {
        let m = parse(MINIMAL, "m.toml", Path::new("/srv")).unwrap();
        assert_eq!(m.functions[0].log_overflow, glint::LogOverflow::DropLines);
        let m = parse(&format!("{MINIMAL}log_overflow = \"fail\"\n"), "m.toml", Path::new("/srv")).unwrap();
        assert_eq!(m.functions[0].log_overflow, glint::LogOverflow::EndCall);
        let p = problems(&format!("{MINIMAL}log_overflow = \"truncate\"\n"));
        assert!(p[0].starts_with("m.toml:7:") && p[0].contains("truncate") && p[0].contains("fail"), "{p:?}");
    }

    #[test]
    fn bad_types_name_the_key() {
        let p = problems(&format!("{MINIMAL}memory_mib = \"lots\"\n"));
        assert!(p[0].starts_with("m.toml:7: `memory_mib`: invalid type: string"), "{p:?}");
        let p = problems(&MINIMAL.replace("\"http\"", "\"grpc\""));
        assert!(p[0].starts_with("m.toml:6:") && p[0].contains("grpc") && p[0].contains("http"), "{p:?}");
        let p = problems(&format!("{MINIMAL}timeout_ms = -1\n"));
        assert!(p[0].starts_with("m.toml:7: `timeout_ms`"), "{p:?}");
    }

    #[test]
    fn every_bad_value_is_reported_with_its_line() {
        let text = r#"
[server]
max_connections = 0
[[function]]
name = "9lives"
image = "x"
route = "nope"
kind = "typed"
memory_mib = 1000
timeout_ms = 0
pool = { ready = 5, max = 1 }
digest = "md5:abc"
"#;
        let p = problems(text);
        let expect = [
            "m.toml:3: `max_connections` = 0 is out of range: it must be 1..=1000000",
            "m.toml:5: `name` = \"9lives\" is not a valid function name",
            "m.toml:12: `digest` = \"md5:abc\"",
            "m.toml:7: `route` = \"nope\": ",
            "m.toml:9: `memory_mib` = 1000 is out of range: it must be 1..=256 MiB",
            "m.toml:10: `timeout_ms` = 0 is out of range",
            "m.toml:11: `pool.ready` = 5 is more than `pool.max` = 1",
        ];
        for e in expect {
            assert!(p.iter().any(|l| l.starts_with(e)), "missing {e:?} in {p:#?}");
        }
    }

    #[test]
    fn names_and_routes_must_be_unique_and_not_reserved() {
        let text = r#"
[[function]]
name = "a"
image = "x"
route = "/u/:id"
kind = "http"
[[function]]
name = "a"
image = "x"
route = "/v"
kind = "http"
[[function]]
name = "b"
image = "x"
route = "/u/:name"
kind = "http"
[[function]]
name = "c"
image = "x"
route = "/metrics"
kind = "http"
"#;
        let p = problems(text);
        assert!(p.iter().any(|l| l == "m.toml:8: function name `a` is already used at line 2"), "{p:#?}");
        assert!(p
            .iter()
            .any(|l| l.starts_with("m.toml:15: `route` = \"/u/:name\" is the same pattern as function `a`")));
        assert!(p.iter().any(|l| l.starts_with("m.toml:20: `route` = \"/metrics\" is reserved")), "{p:#?}");
    }

    #[test]
    fn typed_routes_are_fixed_prefixes_and_kind_fields_do_not_mix() {
        let p = problems(&MINIMAL.replace("\"http\"", "\"typed\""));
        assert!(p[0].contains("a typed function's route is a fixed prefix"), "{p:?}");
        let p = problems(&format!("{MINIMAL}exports = [\"add\"]\n"));
        assert!(p[0].starts_with("m.toml:7: `exports` applies to kind = \"typed\" only"), "{p:?}");
    }

    #[test]
    fn oci_images_need_a_digest_pin() {
        let p = problems(&MINIMAL.replace("guests/hello", "oci://registry:5000/fn/hello:1"));
        assert!(p[0].starts_with("m.toml:4: an oci:// `image` needs a `digest` pin"), "{p:?}");
        let digest = format!("sha256:{}", "ab".repeat(32));
        let text = format!("{}digest = \"{digest}\"\n", MINIMAL.replace("guests/hello", "oci://r:5000/fn/hello:1"));
        let m = parse(&text, "m.toml", Path::new("/srv")).unwrap();
        assert_eq!(m.functions[0].image, ImageSource::Oci("r:5000/fn/hello:1".into()));
        assert_eq!(m.functions[0].digest.as_deref(), Some(digest.as_str()));
    }

    #[test]
    fn syntax_errors_have_a_line() {
        let p = problems("[[function]]\nname = \n");
        assert!(p[0].starts_with("m.toml:2: "), "{p:?}");
        let p = problems("");
        assert_eq!(p, ["m.toml: no [[function]] table: the manifest must declare at least one function"]);
    }

    #[test]
    fn server_section_overrides_and_resolves_the_data_dir() {
        let text = format!(
            "[server]\nmax_body_bytes = 10\nheader_read_timeout_ms = 250\ndata_dir = \"kv\"\nworker_threads = 3\n{MINIMAL}"
        );
        let m = parse(&text, "m.toml", Path::new("/srv")).unwrap();
        assert_eq!(m.server.max_body_bytes, 10);
        assert_eq!(m.server.header_read_timeout, Duration::from_millis(250));
        assert_eq!(m.server.data_dir, PathBuf::from("/srv/kv"));
        assert_eq!(m.functions[0].max_concurrency, 3, "worker_threads is each function's default");
    }
}
