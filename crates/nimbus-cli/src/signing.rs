//! `nimbus signing keygen|sign|verify`: the Ed25519 keys a build pipeline signs artifacts with,
//! and the signatures (`X.wasm.sig` beside `X.wasm`) `nimbus deploy` ships with them. A server
//! started with `--trusted-signers FILE` checks them at deploy; `--require-signatures` refuses
//! components no trusted key signed.
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use nimbus_security::signing::SigningKey;
use nimbus_security::supply::{ArtifactSignature, TrustedSigners};

#[derive(Debug, Subcommand)]
pub(crate) enum SigningCommand {
    /// Create a signing key in KEY_FILE (mode 0600; never overwritten) and print the line that
    /// makes a server trust it.
    Keygen {
        /// Where to write the private key (PKCS#8).
        key_file: PathBuf,
        /// The key's name in the trusted signers file.
        #[arg(long, default_value = "release")]
        name: String,
    },
    /// Sign an artifact (a component's `.wasm`): writes FILE.sig beside it, which `nimbus deploy`
    /// ships with it.
    Sign {
        /// The artifact.
        file: PathBuf,
        /// The private key `nimbus signing keygen` wrote.
        #[arg(long, env = "NIMBUS_SIGNING_KEY")]
        key: PathBuf,
    },
    /// Check FILE.sig against FILE and a trusted signers file, as a server does at deploy.
    Verify {
        /// The artifact.
        file: PathBuf,
        /// Lines `NAME HEX-PUBLIC-KEY`, as `keygen` prints them.
        #[arg(long)]
        trusted: PathBuf,
    },
}

/// The signature file beside `artifact`.
pub(crate) fn signature_path(artifact: &Path) -> PathBuf {
    let mut name = artifact.file_name().unwrap_or_default().to_os_string();
    name.push(".sig");
    artifact.with_file_name(name)
}

/// The key in `path`.
pub(crate) fn open_key(path: &Path) -> anyhow::Result<SigningKey> {
    SigningKey::open(path).with_context(|| format!("cannot use the signing key {}", path.display()))
}

/// The digest of the file at `path`.
fn digest_of(path: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(nimbus_control::digest(&bytes))
}

pub(crate) fn run(command: &SigningCommand) -> anyhow::Result<()> {
    match command {
        SigningCommand::Keygen { key_file, name } => {
            anyhow::ensure!(
                !key_file.exists(),
                "{} already exists; a signing key is never overwritten (choose another path)",
                key_file.display()
            );
            let key = SigningKey::open_or_create(key_file).context("cannot create the signing key")?;
            eprintln!("Wrote the signing key {} (keep it secret: whoever holds it can sign).", key_file.display());
            eprintln!("Add this line to the server's --trusted-signers file:");
            println!("{}", TrustedSigners::line(name, &key));
            Ok(())
        }
        SigningCommand::Sign { file, key } => {
            let key = open_key(key)?;
            let digest = digest_of(file)?;
            let out = signature_path(file);
            std::fs::write(&out, ArtifactSignature::sign(&key, &digest).to_json())
                .with_context(|| format!("cannot write {}", out.display()))?;
            println!("Signed {digest} ({}) into {}", file.display(), out.display());
            Ok(())
        }
        SigningCommand::Verify { file, trusted } => {
            let signers = TrustedSigners::read(trusted)?;
            let sig_path = signature_path(file);
            let bytes = std::fs::read(&sig_path).with_context(|| format!("cannot read {}", sig_path.display()))?;
            let digest = digest_of(file)?;
            let signer = ArtifactSignature::parse(&bytes)
                .and_then(|s| signers.verify(&s, &digest))
                .with_context(|| format!("{} does not carry a trusted signature", file.display()))?;
            println!("{} ({digest}) is signed by `{signer}`", file.display());
            Ok(())
        }
    }
}
