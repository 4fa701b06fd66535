//! `ota catalogue ...`: the catalogue signing keys (`keygen`, `pubkey`) and a check of a signed
//! catalogue document (`verify`). The format is `ota_catalogue::signed`'s.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Subcommand, ValueEnum};
use ota_catalogue::signed::{self, Algorithm, PublicKey, SigningKey};
use rand_core::RngCore;

#[derive(Subcommand)]
pub enum CatalogueCmd {
    /// Make a catalogue signing key (PKCS#8 PEM, mode 0600), as `openssl genpkey` would.
    Keygen {
        /// The signature algorithm: Ed25519 (RFC 8032) or ECDSA P-256 with SHA-256.
        #[arg(long, value_enum, default_value_t = KeyAlg::Ed25519)]
        algorithm: KeyAlg,
        /// Where to write the private key (never overwritten).
        #[arg(short, long, value_name = "KEY.pem")]
        output: PathBuf,
    },
    /// Print the public key (SPKI PEM, what devices get as `catalogue_key`) and its key id.
    Pubkey {
        /// A private or public key PEM.
        #[arg(value_name = "KEY.pem")]
        key: PathBuf,
        /// Write the PEM here instead of standard output.
        #[arg(short, long, value_name = "PUB.pem")]
        output: Option<PathBuf>,
    },
    /// Verify a catalogue document (a saved /manifest.json) with a public key, as a device does.
    Verify {
        /// The catalogue's public key (or its private key).
        #[arg(long, value_name = "PUB.pem")]
        key: PathBuf,
        /// Refuse a serial below this one (the last one a device accepted).
        #[arg(long, value_name = "N")]
        min_serial: Option<u64>,
        /// The signed catalogue document to check.
        #[arg(value_name = "manifest.json")]
        file: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum KeyAlg {
    Ed25519,
    P256,
}

impl From<KeyAlg> for Algorithm {
    fn from(a: KeyAlg) -> Self {
        match a {
            KeyAlg::Ed25519 => Algorithm::Ed25519,
            KeyAlg::P256 => Algorithm::EcdsaP256,
        }
    }
}

/// A signing key from a PEM file; errors name the file.
pub fn load_signing_key(path: &Path) -> Result<SigningKey> {
    let pem = crate::input::read_bounded(path, signed::MAX_PEM_BYTES as u64, "signing key")?;
    SigningKey::from_pem(&pem).map_err(|e| anyhow!("signing key {}: {}", path.display(), e))
}

/// A catalogue public key from a PEM file (public or private); errors name the file.
pub fn load_public_key(path: &Path) -> Result<PublicKey> {
    let pem = crate::input::read_bounded(path, signed::MAX_PEM_BYTES as u64, "catalogue key")?;
    PublicKey::from_pem(&pem).map_err(|e| anyhow!("catalogue key {}: {}", path.display(), e))
}

pub fn run(cmd: CatalogueCmd) -> Result<ExitCode> {
    match cmd {
        CatalogueCmd::Keygen { algorithm, output } => keygen(algorithm.into(), &output),
        CatalogueCmd::Pubkey { key, output } => pubkey(&key, output.as_deref()),
        CatalogueCmd::Verify {
            key,
            min_serial,
            file,
        } => verify(&key, min_serial, &file),
    }
    .map(|_| ExitCode::SUCCESS)
}

fn keygen(alg: Algorithm, output: &Path) -> Result<()> {
    let key = loop {
        let mut secret = [0u8; 32];
        rand_core::OsRng.fill_bytes(&mut secret);
        // A P-256 scalar must be in 1..n: redraw the (2^-32 likely) others.
        if let Some(k) = SigningKey::from_secret_bytes(alg, &secret) {
            break k;
        }
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(output).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow!(
                "{} already exists: refusing to overwrite a key",
                output.display()
            )
        } else {
            anyhow!("creating {}: {}", output.display(), e)
        }
    })?;
    f.write_all(key.to_pkcs8_pem().as_bytes())
        .and_then(|_| f.sync_all())
        .with_context(|| format!("writing {}", output.display()))?;
    let public = key.public_key();
    println!(
        "wrote {} ({} private key, key id {})",
        output.display(),
        alg,
        public.key_id_hex()
    );
    Ok(())
}

fn pubkey(key: &Path, output: Option<&Path>) -> Result<()> {
    let public = load_public_key(key)?;
    let pem = public.to_pem();
    match output {
        Some(out) => {
            if out.exists() {
                bail!("{} already exists: refusing to overwrite it", out.display());
            }
            std::fs::write(out, &pem).with_context(|| format!("writing {}", out.display()))?;
            println!(
                "wrote {} ({} public key, key id {})",
                out.display(),
                public.algorithm(),
                public.key_id_hex()
            );
        }
        None => {
            print!("{pem}");
            eprintln!(
                "{} public key, key id {}",
                public.algorithm(),
                public.key_id_hex()
            );
        }
    }
    Ok(())
}

fn verify(key: &Path, min_serial: Option<u64>, file: &Path) -> Result<()> {
    let public = load_public_key(key)?;
    let doc =
        crate::input::read_bounded(file, ota_catalogue::MAX_CATALOGUE_BYTES as u64, "catalogue")?;
    let v = signed::verify(&doc, &public, min_serial)
        .map_err(|e| anyhow!("{}: {}", file.display(), e))?;
    println!(
        "{}: signed by {} key id {}, serial {}, {} entries",
        file.display(),
        v.algorithm,
        v.key_id,
        v.serial,
        v.catalogue.entries.len()
    );
    Ok(())
}
