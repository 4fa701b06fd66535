//! espsecure (esptool's signing tool, from `.venv`) as the tests' key maker and signer.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{s, text};

pub struct Esp {
    pub py: PathBuf,
}

impl Esp {
    /// espsecure from the Python that has esptool (None: the caller says SKIP).
    pub fn find() -> Option<Esp> {
        super::python().map(|py| Esp { py })
    }

    #[track_caller]
    pub fn ok(&self, args: &[&str]) {
        let o = Command::new(&self.py)
            .args(["-m", "espsecure"])
            .args(args)
            .env("NO_COLOR", "1")
            .output()
            .expect("running espsecure");
        assert!(o.status.success(), "espsecure {args:?}:\n{}", text(&o));
    }

    /// A fresh Secure Boot v2 key of `scheme` and its public key.
    pub fn keygen(&self, dir: &Path, name: &str, scheme: &str) -> (PathBuf, PathBuf) {
        let k = dir.join(format!("{name}.pem"));
        let p = dir.join(format!("{name}.pub.pem"));
        self.ok(&[
            "generate-signing-key",
            "--version",
            "2",
            "--scheme",
            scheme,
            s(&k),
        ]);
        self.ok(&[
            "extract-public-key",
            "--version",
            "2",
            "--keyfile",
            s(&k),
            s(&p),
        ]);
        (k, p)
    }

    /// `espsecure sign-data --version 2` of `img` into `out`.
    pub fn sign(&self, key: &Path, img: &Path, out: &Path) {
        self.ok(&[
            "sign-data",
            "--version",
            "2",
            "--keyfile",
            s(key),
            "-o",
            s(out),
            s(img),
        ]);
    }
}
