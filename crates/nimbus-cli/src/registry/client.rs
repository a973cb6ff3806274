//! Talking to one OCI registry about one reference: credentials from the docker config file,
//! plain HTTP only to a registry on this machine, pushing a bundle's artifact, and pulling one
//! back with every size bounded and every digest checked.
use std::net::IpAddr;
use std::path::PathBuf;

use base64::Engine;
use futures::StreamExt;
use nimbus_control::Bundle;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{DigestError, OciDistributionError, OciErrorCode};
use oci_client::manifest::{OCI_IMAGE_MEDIA_TYPE, OciDescriptor};
use oci_client::secrets::RegistryAuth;
use oci_client::{Reference, RegistryOperation};

use super::error::RegistryError;
use super::layout;

/// Largest manifest taken (the OCI distribution spec's floor for what registries accept).
const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// Largest artifact taken, all its blobs together.
const MAX_ARTIFACT_BYTES: u64 = 1 << 30;

/// A registry and a reference in it.
pub(crate) struct Registry {
    client: oci_client::Client,
    http: reqwest::Client,
    reference: Reference,
    auth: RegistryAuth,
    scheme: &'static str,
}

/// An artifact pulled and checked: its bundle and where it is pinned.
pub(crate) struct Pulled {
    /// The app.
    pub(crate) bundle: Bundle,
    /// `REGISTRY/REPOSITORY@sha256:HEX`: the manifest that was pulled.
    pub(crate) pinned: String,
}

impl Registry {
    /// The registry of `reference`, over HTTPS, or plain HTTP if `insecure` (refused unless the
    /// registry is on this machine).
    pub(crate) fn new(reference: &str, insecure: bool) -> anyhow::Result<Self> {
        let reference: Reference = reference
            .parse()
            .map_err(|e| RegistryError::BadReference(format!("`{reference}` is not a registry reference: {e}")))?;
        let host = reference.resolve_registry().to_string();
        if insecure && !is_loopback(&host) {
            return Err(RegistryError::Insecure(format!(
                "--insecure sends plain HTTP, and `{host}` is not a registry on this machine"
            ))
            .into());
        }
        let protocol = if insecure { ClientProtocol::Http } else { ClientProtocol::Https };
        let client = oci_client::Client::new(ClientConfig { protocol, ..ClientConfig::default() });
        let http = reqwest::Client::builder().build()?;
        let auth = credentials(&reference)?;
        Ok(Self { client, http, reference, auth, scheme: if insecure { "http" } else { "https" } })
    }

    /// Pushes `bundle` as this reference's artifact; returns the manifest's digest.
    pub(crate) async fn push(&self, bundle: &Bundle) -> Result<String, RegistryError> {
        if self.reference.digest().is_some() {
            return Err(RegistryError::BadReference(format!(
                "`{}` names a digest; push to a tag (REGISTRY/REPOSITORY:TAG)",
                self.reference
            )));
        }
        let (config, layers, manifest) = layout::artifact(bundle);
        self.client
            .auth(&self.reference, &self.auth, RegistryOperation::Push)
            .await
            .map_err(|e| classify("cannot log in to the registry", e))?;
        for blob in layers.iter().chain([&config]) {
            let digest = &blob.descriptor.digest;
            self.client
                .push_blob(&self.reference, blob.data, digest)
                .await
                .map_err(|e| classify(&format!("cannot push the blob {digest} to {}", self.reference), e))?;
        }
        let digest = nimbus_control::digest(&manifest);
        let content_type = reqwest::header::HeaderValue::from_static(OCI_IMAGE_MEDIA_TYPE);
        self.client
            .push_manifest_raw(&self.reference, manifest, content_type)
            .await
            .map_err(|e| classify(&format!("cannot push the manifest of {}", self.reference), e))?;
        Ok(digest)
    }

    /// Pulls this reference's artifact: the manifest (a tag resolves to the digest of the
    /// manifest it names now, and everything after is fetched by digest), then the config and
    /// each layer, each checked against its digest and size.
    pub(crate) async fn pull(&self) -> Result<Pulled, RegistryError> {
        let token = self
            .client
            .auth(&self.reference, &self.auth, RegistryOperation::Pull)
            .await
            .map_err(|e| classify("cannot log in to the registry", e))?;
        let manifest = self.manifest(token.as_deref()).await?;
        let digest = nimbus_control::digest(&manifest);
        if self.reference.digest().is_some_and(|d| d != digest) {
            return Err(RegistryError::DigestMismatch(format!(
                "the registry answered {} with a manifest whose digest is {digest}",
                self.reference
            )));
        }
        let (config, layers) = layout::read(&manifest)?;
        let mut budget = MAX_ARTIFACT_BYTES;
        let mut entries = vec![(nimbus_control::MANIFEST_ENTRY.to_string(), self.blob(&config, &mut budget).await?)];
        for (path, layer) in &layers {
            entries.push((path.clone(), self.blob(layer, &mut budget).await?));
        }
        let bundle = Bundle::from_entries(entries)
            .map_err(|e| RegistryError::NotNimbus(format!("its layers do not make a Nimbus app: {e}")))?;
        let pinned = format!("{}/{}@{digest}", self.reference.registry(), self.reference.repository());
        Ok(Pulled { bundle, pinned })
    }

    /// The manifest's bytes, at most [`MAX_MANIFEST_BYTES`] (the OCI client reads a manifest
    /// whole, whatever its size, so this one request is made here).
    async fn manifest(&self, token: Option<&str>) -> Result<Vec<u8>, RegistryError> {
        let r = &self.reference;
        let at = r.digest().or(r.tag()).unwrap_or("latest");
        let url = format!("{}://{}/v2/{}/manifests/{at}", self.scheme, r.resolve_registry(), r.repository());
        let mut request = self.http.get(&url).header(reqwest::header::ACCEPT, OCI_IMAGE_MEDIA_TYPE);
        request = match (token, &self.auth) {
            (Some(token), _) => request.bearer_auth(token),
            (None, RegistryAuth::Basic(user, password)) => request.basic_auth(user, Some(password)),
            _ => request,
        };
        let failed = |e: reqwest::Error| RegistryError::Failed(format!("cannot fetch the manifest of {r}: {e}"));
        let mut response = request.send().await.map_err(failed)?;
        match response.status() {
            s if s.is_success() => {}
            reqwest::StatusCode::UNAUTHORIZED | reqwest::StatusCode::FORBIDDEN => {
                return Err(RegistryError::Unauthorized(format!("the registry refused to show {r}")));
            }
            reqwest::StatusCode::NOT_FOUND => {
                return Err(RegistryError::NotFound(format!("the registry has no artifact {r}")));
            }
            s => return Err(RegistryError::Failed(format!("the registry answered {s} for the manifest of {r}"))),
        }
        let too_large = || RegistryError::TooLarge(format!("the manifest of {r} is over {MAX_MANIFEST_BYTES} bytes"));
        if response.content_length().is_some_and(|l| l > MAX_MANIFEST_BYTES) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(failed)? {
            if (body.len() + chunk.len()) as u64 > MAX_MANIFEST_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// The blob `descriptor` names, streamed and checked against its size and digest; its size
    /// is taken from `budget`.
    async fn blob(&self, descriptor: &OciDescriptor, budget: &mut u64) -> Result<Vec<u8>, RegistryError> {
        let digest = &descriptor.digest;
        let size = u64::try_from(descriptor.size).unwrap_or(u64::MAX);
        if size > *budget {
            return Err(RegistryError::TooLarge(format!(
                "the blob {digest} ({size} bytes) takes the artifact over {MAX_ARTIFACT_BYTES} bytes"
            )));
        }
        *budget -= size;
        let what = format!("the blob {digest} of {}", self.reference);
        let mut stream =
            self.client.pull_blob_stream(&self.reference, descriptor).await.map_err(|e| classify(&what, e))?;
        let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| match e.get_ref().and_then(|e| e.downcast_ref::<DigestError>()) {
                Some(_) => RegistryError::DigestMismatch(format!("{what} does not match its digest")),
                None => RegistryError::Failed(format!("{what} broke off: {e}")),
            })?;
            if (data.len() + chunk.len()) as u64 > size {
                return Err(RegistryError::DigestMismatch(format!(
                    "{what} is larger than the {size} bytes it should be"
                )));
            }
            data.extend_from_slice(&chunk);
        }
        let actual = nimbus_control::digest(&data);
        if actual != *digest || data.len() as u64 != size {
            return Err(RegistryError::DigestMismatch(format!("{what} does not match its digest (it is {actual})")));
        }
        Ok(data)
    }
}

/// A registry failure in words, with what it was doing.
fn classify(what: &str, e: OciDistributionError) -> RegistryError {
    let status = match &e {
        OciDistributionError::UnauthorizedError { .. } | OciDistributionError::AuthenticationFailure(_) => Some(401),
        OciDistributionError::ServerError { code, .. } => Some(*code),
        OciDistributionError::RequestError(r) => r.status().map(|s| s.as_u16()),
        OciDistributionError::RegistryError { envelope, .. } => envelope.errors.iter().find_map(|e| match e.code {
            OciErrorCode::Unauthorized | OciErrorCode::Denied => Some(401),
            OciErrorCode::BlobUnknown
            | OciErrorCode::ManifestUnknown
            | OciErrorCode::NameUnknown
            | OciErrorCode::NotFound => Some(404),
            _ => None,
        }),
        _ => None,
    };
    match (status, &e) {
        (_, OciDistributionError::DigestError(_)) => RegistryError::DigestMismatch(format!("{what}: {e}")),
        (Some(401 | 403), _) => RegistryError::Unauthorized(format!("{what}: the registry refused the credentials")),
        (Some(404), _) => RegistryError::NotFound(format!("{what}: the registry does not have it")),
        _ => RegistryError::Failed(format!("{what}: {e}")),
    }
}

/// Whether `host` (`HOST` or `HOST:PORT`) is this machine.
fn is_loopback(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost") || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The credentials for `reference`'s registry in the docker config file
/// (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`), anonymous if there are none.
fn credentials(reference: &Reference) -> anyhow::Result<RegistryAuth> {
    let path = match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) => PathBuf::from(dir).join("config.json"),
        None => match std::env::var_os("HOME") {
            Some(home) => PathBuf::from(home).join(".docker/config.json"),
            None => return Ok(RegistryAuth::Anonymous),
        },
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(RegistryAuth::Anonymous),
        Err(e) => anyhow::bail!("cannot read the docker config {}: {e}", path.display()),
    };
    let config: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("the docker config {} is not JSON: {e}", path.display()))?;
    let wanted = [reference.registry(), reference.resolve_registry()];
    let entry = config["auths"].as_object().and_then(|auths| {
        auths.iter().find(|(key, _)| {
            let host = key.trim_start_matches("https://").trim_start_matches("http://");
            wanted.contains(&host.split('/').next().unwrap_or_default())
        })
    });
    let Some((key, entry)) = entry else { return Ok(RegistryAuth::Anonymous) };
    let Some(encoded) = entry["auth"].as_str() else { return Ok(RegistryAuth::Anonymous) };
    let invalid = || anyhow::anyhow!("the `auth` of `{key}` in {} is not base64 of USER:PASSWORD", path.display());
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).map_err(|_| invalid())?;
    let decoded = String::from_utf8(decoded).map_err(|_| invalid())?;
    let (user, password) = decoded.split_once(':').ok_or_else(invalid)?;
    Ok(RegistryAuth::Basic(user.to_string(), password.to_string()))
}
