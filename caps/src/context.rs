//! The resources every function shares: the key-value database, the HTTP client, the denial hook.

use crate::config::CapsConfig;
use crate::error::{CapsError, CapsErrorKind};
use crate::kv::KvDatabase;
use crate::outbound::Client;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

/// A run-time refusal, reported to the hook of [`CapsContext::on_denial`]: a host outside the
/// allow-list, a quota reached, a store or variable not granted, an ungranted capability called.
/// It never holds a variable's value, a URL's path or query, a header or a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// The function whose guest made the call.
    pub function: Arc<str>,
    /// The request, when the server marked it with [`enter_request`](crate::enter_request).
    pub request_id: Option<Arc<str>>,
    /// The host function called, e.g. `glint:http/send@1`.
    pub capability: &'static str,
    /// `Denied`, `QuotaExceeded`, `UnknownStore` or `UnknownVariable`.
    pub kind: CapsErrorKind,
    /// The rule: `allowed_outbound_hosts`, `quota.kv_bytes`, `quota.outbound_requests`,
    /// `key_value_stores`, `variables`, `not_granted`.
    pub rule: &'static str,
    /// The error message, as the guest received it.
    pub detail: String,
}

type DenialHook = Arc<dyn Fn(&Denial) + Send + Sync>;

/// The resources shared by every function of a server (or an embedder): made once, cheap to
/// clone (an `Arc` inside), `Send + Sync`.
#[derive(Clone)]
pub struct CapsContext {
    inner: Arc<Inner>,
}

struct Inner {
    config: CapsConfig,
    data_dir: Option<PathBuf>,
    kv: Mutex<Option<Arc<KvDatabase>>>,
    client: Client,
    on_denial: RwLock<Option<DenialHook>>,
}

impl std::fmt::Debug for CapsContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CapsContext")
            .field("config", &self.inner.config)
            .field("data_dir", &self.inner.data_dir)
            .finish_non_exhaustive()
    }
}

impl CapsContext {
    /// A context with `config`; the key-value database will live in `data_dir` (`kv.redb`),
    /// opened when the first function granted a store is registered. Without a data directory,
    /// granting a store is an error.
    ///
    /// # Errors
    /// An invalid configuration value (the error names its key).
    pub fn new(config: &CapsConfig, data_dir: Option<&Path>) -> Result<CapsContext, CapsError> {
        config.validate()?;
        Ok(CapsContext {
            inner: Arc::new(Inner {
                config: config.clone(),
                data_dir: data_dir.map(Path::to_owned),
                kv: Mutex::new(None),
                client: Client::new(),
                on_denial: RwLock::new(None),
            }),
        })
    }

    /// Installs the hook that receives every [`Denial`] (replacing an earlier one). It runs on
    /// the worker thread inside the host call: keep it short and never block in it.
    pub fn on_denial(self, hook: impl Fn(&Denial) + Send + Sync + 'static) -> Self {
        *self.inner.on_denial.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(hook));
        self
    }

    /// The configuration.
    pub fn config(&self) -> &CapsConfig {
        &self.inner.config
    }

    /// The key-value database, opened on first use.
    ///
    /// # Errors
    /// No data directory (named after `store`, the store that needs it), or it cannot be opened.
    pub fn kv_database(&self, store: &str) -> Result<Arc<KvDatabase>, CapsError> {
        let mut kv = self.inner.kv.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(db) = kv.as_ref() {
            return Ok(Arc::clone(db));
        }
        let dir = self.inner.data_dir.as_deref().ok_or_else(|| CapsError::NoDataDir { store: store.to_owned() })?;
        let db = KvDatabase::open_in(dir)?;
        *kv = Some(Arc::clone(&db));
        Ok(db)
    }

    pub(crate) fn client(&self) -> &Client {
        &self.inner.client
    }

    pub(crate) fn report(&self, denial: &Denial) {
        let hook = self.inner.on_denial.read().unwrap_or_else(PoisonError::into_inner).clone();
        if let Some(hook) = hook {
            hook(denial);
        }
    }
}
