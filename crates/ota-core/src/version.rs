//! Version policies: `none` (ADF default), `newer` (ADF's strict `vX.Y.Z`, adf-ota-service.md §5)
//! and `semver` (semantic versions, also ordering `git describe` strings).
//!
//! CONTRACT (skeleton): keep public names and signatures; bodies are to be written.

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum VersionPolicy {
    #[default]
    None,
    Newer,
    Semver,
}

/// Outcome of applying a policy to (current, incoming).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionVerdict {
    Accept,
    /// Incoming is not newer than current (ADF `NO_HIGHER_VERSION`).
    NotNewer,
    /// Incoming version does not parse under the policy (ADF `ERROR_VERSION`).
    InvalidIncoming,
}
