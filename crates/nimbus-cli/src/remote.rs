//! Talking to a `nimbus server`: where it is, which token to use and which CA to trust over
//! HTTPS (flags, then `NIMBUS_SERVER` / `NIMBUS_TOKEN` / `NIMBUS_CACERT`, then the config file
//! `nimbus login` writes), HTTP calls with errors that say what to do, and output as text or JSON.
use std::path::PathBuf;

use anyhow::{Context, anyhow, bail};
use clap::{Args, ValueEnum};
use nimbus_control::ErrorBody;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// Where the server is and how to authenticate.
#[derive(Debug, Args)]
pub(crate) struct RemoteArgs {
    /// URL of the control API, e.g. http://127.0.0.1:3001 (or NIMBUS_SERVER, or `nimbus login`).
    #[arg(long, env = "NIMBUS_SERVER", global = true)]
    server: Option<String>,
    /// API token (or NIMBUS_TOKEN, or `nimbus login`).
    #[arg(long, env = "NIMBUS_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// Trust only this CA certificate (PEM) for an https:// server, e.g. the local CA that
    /// `nimbus server --tls auto` prints (or NIMBUS_CACERT, or the one `nimbus login` pinned).
    #[arg(long, env = "NIMBUS_CACERT", global = true)]
    cacert: Option<PathBuf>,
}

impl RemoteArgs {
    /// Whether a server was named by flag or environment (not just in the config file).
    pub(crate) fn names_server(&self) -> bool {
        self.server.is_some()
    }

    /// The CA certificate (PEM) from the flag, the environment or the config file, if any.
    pub(crate) fn ca(&self) -> anyhow::Result<Option<String>> {
        match self.cacert.as_deref().map(read_ca).transpose()? {
            Some(ca) => Ok(Some(ca)),
            None => Ok(Config::load()?.cacert),
        }
    }

    /// The token from the flag, the environment or the config file, if any.
    pub(crate) fn token(&self) -> anyhow::Result<Option<String>> {
        Ok(match &self.token {
            Some(t) => Some(t.clone()),
            None => Config::load()?.token,
        })
    }
}

/// Where an app's data (topics, buckets, actors) is: a server and the app, or the `nimbus up`
/// of this directory and its app.
#[derive(Debug, Args)]
pub(crate) struct DataArgs {
    #[command(flatten)]
    pub(crate) remote: RemoteArgs,
    /// The app whose data to use (or NIMBUS_APP; default: the app of the `nimbus up` running in
    /// this directory).
    #[arg(long, env = "NIMBUS_APP", global = true)]
    pub(crate) app: Option<String>,
}

impl DataArgs {
    /// A client of the node and the path of the app's data, `/v1/apps/APP`.
    pub(crate) fn connect(&self) -> anyhow::Result<(Client, String)> {
        let local = (!self.remote.names_server()).then(crate::local_api::LocalApi::here).flatten();
        let (client, served) = match local {
            Some(api) => (Client::with(&api.url, Some(api.token), api.cacert.as_deref())?, Some(api.app)),
            None => (Client::new(&self.remote)?, None),
        };
        let Some(app) = self.app.clone().or(served) else {
            bail!("name the app whose data to use: --app APP (or NIMBUS_APP)");
        };
        Ok((client, format!("/v1/apps/{}", seg(&app))))
    }

    /// A client of the app's gateway: `gateway` with this command's token, or the `nimbus up`
    /// of this directory with its local token (which non-public actors and workflows take).
    pub(crate) fn gateway(&self, gateway: Option<&str>) -> anyhow::Result<Client> {
        let (gateway, token, ca) = match gateway {
            Some(g) => (g.to_string(), self.remote.token()?, self.remote.ca()?),
            None => crate::local_api::LocalApi::here()
                .map(|api| (api.gateway, Some(api.token), api.cacert))
                .context("no gateway: run `nimbus up` in this directory, or pass --gateway URL")?,
        };
        Client::with(&gateway, token, ca.as_deref())
    }
}

/// A `--data` argument: the text itself, or the bytes of FILE for `@FILE`.
pub(crate) fn data_arg(data: &str) -> anyhow::Result<Vec<u8>> {
    match data.strip_prefix('@') {
        Some(path) => std::fs::read(path).with_context(|| format!("cannot read {path}")),
        None => Ok(data.as_bytes().to_vec()),
    }
}

/// How reads are printed.
#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub(crate) enum Output {
    /// For people.
    #[default]
    Text,
    /// For scripts: the API's JSON.
    Json,
}

/// `--output`, for commands that read.
#[derive(Debug, Args)]
pub(crate) struct OutputArgs {
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Text)]
    pub(crate) output: Output,
}

impl OutputArgs {
    /// Prints `value` as JSON, or with `text` for people.
    pub(crate) fn print<T: Serialize>(&self, value: &T, text: impl FnOnce(&T)) -> anyhow::Result<()> {
        match self.output {
            Output::Json => println!("{}", serde_json::to_string_pretty(value)?),
            Output::Text => text(value),
        }
        Ok(())
    }
}

/// The config file of `nimbus login`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    pub(crate) server: Option<String>,
    pub(crate) token: Option<String>,
    /// The CA certificate (PEM) pinned by `nimbus login --cacert`: the only root trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cacert: Option<String>,
}

impl Config {
    pub(crate) fn path() -> Option<PathBuf> {
        let base = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
        Some(base.join("nimbus").join("config.toml"))
    }

    fn load() -> anyhow::Result<Self> {
        let Some(path) = Self::path() else { return Ok(Self::default()) };
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).with_context(|| format!("{} is not a valid config file", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Writes the file, readable by its owner only (it holds a token).
    pub(crate) fn save(&self) -> anyhow::Result<PathBuf> {
        let path = Self::path().context("cannot find the config directory: set HOME or XDG_CONFIG_HOME")?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        write_private(&path, toml::to_string(self)?.as_bytes())?;
        Ok(path)
    }
}

/// Writes `bytes` to `path` readable by its owner only (it holds a token): whole or not at all
/// (written beside it, synced, then renamed).
pub(crate) fn write_private(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// A client of one server's control API.
pub(crate) struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
    rt: tokio::runtime::Runtime,
}

impl Client {
    /// The server and token from flags, environment or config file.
    pub(crate) fn new(args: &RemoteArgs) -> anyhow::Result<Self> {
        let config = Config::load()?;
        let base = args.server.clone().or(config.server).context(
            "no server given: pass --server URL, set NIMBUS_SERVER, or run `nimbus login --server URL --token TOKEN`",
        )?;
        let ca = args.cacert.as_deref().map(read_ca).transpose()?.or(config.cacert);
        Self::with(&base, args.token.clone().or(config.token), ca.as_deref())
    }

    /// The `nimbus up` running in this directory (found through `.nimbus/api.json`) unless a
    /// server is named by flag or environment; else the configured server.
    pub(crate) fn for_node(args: &RemoteArgs) -> anyhow::Result<Self> {
        if !args.names_server()
            && let Some(api) = crate::local_api::LocalApi::here()
        {
            return Self::with(&api.url, Some(api.token), api.cacert.as_deref());
        }
        Self::new(args)
    }

    /// A client of `base` with `token`, trusting only the CA certificate `ca` (PEM) if given,
    /// else the public roots built in.
    pub(crate) fn with(base: &str, token: Option<String>, ca: Option<&str>) -> anyhow::Result<Self> {
        let base = base.trim_end_matches('/').to_string();
        if !base.starts_with("http://") && !base.starts_with("https://") {
            bail!("server `{base}` is not an http:// or https:// URL");
        }
        let mut http = reqwest::Client::builder();
        if let Some(ca) = ca {
            let root = reqwest::Certificate::from_pem(ca.as_bytes()).context("the CA certificate is not valid PEM")?;
            http = http.tls_built_in_root_certs(false).add_root_certificate(root);
        }
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        Ok(Self { base, token, http: http.build().context("cannot set up the HTTP client")?, rt })
    }

    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request and decodes the JSON answer (`()` for empty answers).
    pub(crate) fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<reqwest::Body>,
        content_type: &str,
    ) -> anyhow::Result<T> {
        let bytes = self.raw(method, path, body, content_type)?;
        let bytes = if bytes.is_empty() { &b"null"[..] } else { &bytes[..] };
        serde_json::from_slice(bytes).with_context(|| format!("unexpected answer from {}{path}", self.base))
    }

    /// Sends a request and returns the answer's body as it is.
    pub(crate) fn raw(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<reqwest::Body>,
        content_type: &str,
    ) -> anyhow::Result<bytes::Bytes> {
        self.raw_with(method, path, body, content_type, &[])
    }

    /// Like [`Client::raw`], with `headers` added.
    pub(crate) fn raw_with(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<reqwest::Body>,
        content_type: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<bytes::Bytes> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some(body) = body {
            req = req.header(reqwest::header::CONTENT_TYPE, content_type).body(body);
        }
        self.rt.block_on(async {
            let resp = req.send().await.map_err(|e| {
                anyhow!(
                    "cannot reach the Nimbus control API at {}: {e}\n  start one with `nimbus server`, or point --server / NIMBUS_SERVER at it",
                    self.base
                )
            })?;
            let status = resp.status();
            let bytes = resp.bytes().await.with_context(|| format!("the answer of {url} broke off"))?;
            if !status.is_success() {
                return Err(server_error(status, &bytes));
            }
            Ok(bytes)
        })
    }

    /// GETs a streamed answer (NDJSON) and hands each line to `each` until the server ends it.
    pub(crate) fn lines(&self, path: &str, mut each: impl FnMut(&str) -> anyhow::Result<()>) -> anyhow::Result<()> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.get(&url);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        self.rt.block_on(async {
            let mut resp =
                req.send().await.map_err(|e| anyhow!("cannot reach the Nimbus API at {}: {e}", self.base))?;
            let status = resp.status();
            if !status.is_success() {
                let bytes = resp.bytes().await.unwrap_or_default();
                return Err(server_error(status, &bytes));
            }
            let mut pending = Vec::new();
            while let Some(chunk) = resp.chunk().await.with_context(|| format!("the answer of {url} broke off"))? {
                pending.extend_from_slice(&chunk);
                while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=nl).collect();
                    each(String::from_utf8_lossy(&line[..nl]).trim_end())?;
                }
            }
            Ok(())
        })
    }

    pub(crate) fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call(reqwest::Method::GET, path, None, "")
    }

    pub(crate) fn send<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &impl Serialize,
    ) -> anyhow::Result<T> {
        self.call(method, path, Some(serde_json::to_vec(body)?.into()), "application/json")
    }

    pub(crate) fn delete(&self, path: &str) -> anyhow::Result<()> {
        self.call(reqwest::Method::DELETE, path, None, "")
    }
}

/// The CA certificate (PEM) in `path`.
pub(crate) fn read_ca(path: &std::path::Path) -> anyhow::Result<String> {
    let pem =
        std::fs::read_to_string(path).with_context(|| format!("cannot read the CA certificate {}", path.display()))?;
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        bail!("{} is not a PEM certificate (-----BEGIN CERTIFICATE-----)", path.display());
    }
    Ok(pem)
}

fn server_error(status: reqwest::StatusCode, body: &[u8]) -> anyhow::Error {
    let Ok(e) = serde_json::from_slice::<ErrorBody>(body) else {
        return anyhow!("the server answered {status}: {}", String::from_utf8_lossy(body).trim());
    };
    let mut message = if e.code.is_empty() {
        format!("{} ({status})", e.error)
    } else {
        format!("[{}] {} ({status})", e.code, e.error)
    };
    for detail in &e.details {
        message.push_str(&format!("\n{detail}"));
    }
    if let Some(hint) = &e.hint {
        message.push_str(&format!("\n  = help: {hint}"));
    }
    anyhow!(message)
}

/// `2026-11-27T06:00:00Z` for unix seconds.
pub(crate) fn time(secs: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs)).to_string()
}

/// Percent-encodes a path segment (app names and ids are plain, but never trust that).
pub(crate) use nimbus_control::path_segment as seg;
