//! Secrets: argon2 hashing and verification of API keys, feed tokens and passwords.
//!
//! Configured secrets exist only as argon2 PHC strings. Verifying argon2 costs tens of
//! milliseconds by design, which a busy API or CalDAV client cannot pay per request, so
//! each [`Verifier`] remembers the outcome per SHA-256 digest of the presented secret
//! (in memory only, bounded). The expensive check runs on the blocking pool, at most
//! [`PARALLEL_VERIFICATIONS`] at a time over the whole process: each one takes argon2's
//! 19 MiB of memory, so a burst of first requests (or of guessed passwords) must not
//! multiply that.
//!
//! What lives elsewhere: which principal may touch which tenant is decided by the
//! HTTP layer; this module only answers "whose secret is this?".

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use sha2::{Digest, Sha256};

/// How many verified (or rejected) secrets each verifier remembers before starting over.
const CACHE_CAPACITY: usize = 4096;

/// argon2 verifications running at once, over every verifier.
const PARALLEL_VERIFICATIONS: usize = 2;
static VERIFICATION_SLOTS: tokio::sync::Semaphore =
    tokio::sync::Semaphore::const_new(PARALLEL_VERIFICATIONS);

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("could not hash the secret: {0}")]
    Hash(String),
}

/// Hashes a secret into an argon2id PHC string with a random salt (`calgate hash-password`).
pub fn hash_secret(secret: &str) -> Result<String, AuthError> {
    Argon2::default()
        .hash_password(secret.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

/// Checks that `value` is an argon2 PHC string (used when validating the config).
pub fn check_hash_format(value: &str) -> Result<(), String> {
    let hash = PasswordHash::new(value)
        .map_err(|_| "is not an argon2 PHC hash string (\"$argon2id$v=19$...\")".to_owned())?;
    if !hash.algorithm.as_str().starts_with("argon2") {
        return Err(format!(
            "uses algorithm {}, expected argon2id",
            hash.algorithm.as_str()
        ));
    }
    Ok(())
}

fn matches(hash: &str, secret: &[u8]) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| Argon2::default().verify_password(secret, &parsed).is_ok())
        .unwrap_or(false)
}

struct Entry<P> {
    /// Narrows which entries a secret is checked against (a user name); `None` for
    /// bearer-style secrets (keys, tokens) that must be tried against every entry.
    lookup: Option<String>,
    hash: String,
    principal: P,
}

/// Finds the principal owning a secret, with a bounded memo of past answers.
pub struct Verifier<P> {
    entries: Vec<Entry<P>>,
    cache: Mutex<HashMap<[u8; 32], Option<P>>>,
    /// argon2 checks run so far (each costs tens of ms and 19 MiB).
    checks: std::sync::atomic::AtomicUsize,
}

impl<P: Clone + Send + Sync + 'static> Verifier<P> {
    pub fn new() -> Self {
        Verifier {
            entries: Vec::new(),
            cache: Mutex::new(HashMap::new()),
            checks: Default::default(),
        }
    }

    /// Adds a hashed secret; `lookup` is the user name for password entries.
    pub fn add(&mut self, lookup: Option<&str>, hash: &str, principal: P) {
        self.entries.push(Entry {
            lookup: lookup.map(str::to_owned),
            hash: hash.to_owned(),
            principal,
        });
    }

    /// Returns the principal whose secret this is, or `None`.
    pub async fn verify(self: &Arc<Self>, lookup: Option<&str>, secret: &str) -> Option<P> {
        let digest = {
            let mut h = Sha256::new();
            h.update(lookup.unwrap_or("").as_bytes());
            h.update([0u8]);
            h.update(secret.as_bytes());
            <[u8; 32]>::from(h.finalize())
        };
        if let Some(known) = self.lock_cache().get(&digest) {
            return known.clone();
        }
        // The semaphore is never closed; were it, verifying unthrottled is still correct.
        let _slot = VERIFICATION_SLOTS.acquire().await.ok();
        // Concurrent requests with the same secret: the first one verified it.
        if let Some(known) = self.lock_cache().get(&digest) {
            return known.clone();
        }
        let this = Arc::clone(self);
        let lookup = lookup.map(str::to_owned);
        let secret = secret.to_owned();
        self.checks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let found = tokio::task::spawn_blocking(move || {
            this.entries
                .iter()
                .filter(|e| e.lookup == lookup)
                .find(|e| matches(&e.hash, secret.as_bytes()))
                .map(|e| e.principal.clone())
        })
        .await
        .unwrap_or(None);
        let mut cache = self.lock_cache();
        if cache.len() >= CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(digest, found.clone());
        found
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Option<P>>> {
        // A poisoned memo is still a valid memo: every value in it was fully written.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<P: Clone + Send + Sync + 'static> Default for Verifier<P> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn verifies_and_remembers() {
        let hash = hash_secret("s3cret").unwrap();
        check_hash_format(&hash).unwrap();
        let mut v = Verifier::new();
        v.add(None, &hash, "tenant-a");
        v.add(Some("alice"), &hash, "alice");
        let v = Arc::new(v);
        assert_eq!(v.verify(None, "s3cret").await, Some("tenant-a"));
        assert_eq!(v.verify(None, "s3cret").await, Some("tenant-a"));
        assert_eq!(v.verify(None, "wrong").await, None);
        assert_eq!(v.verify(Some("alice"), "s3cret").await, Some("alice"));
        assert_eq!(v.verify(Some("bob"), "s3cret").await, None);
    }

    /// Clients starting together with one password: the first checks run at
    /// most [`PARALLEL_VERIFICATIONS`] at once, the others find their answer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_burst_with_one_secret_checks_it_at_most_twice() {
        let hash = hash_secret("burst").unwrap();
        let mut v = Verifier::new();
        v.add(Some("ana"), &hash, "ana");
        let v = Arc::new(v);
        let burst: Vec<_> = (0..8)
            .map(|_| {
                let v = Arc::clone(&v);
                tokio::spawn(async move { v.verify(Some("ana"), "burst").await })
            })
            .collect();
        for request in burst {
            assert_eq!(request.await.unwrap(), Some("ana"));
        }
        let checks = v.checks.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            (1..=PARALLEL_VERIFICATIONS).contains(&checks),
            "{checks} checks"
        );
    }

    #[test]
    fn rejects_non_phc_strings() {
        assert!(check_hash_format("demo").is_err());
        assert!(check_hash_format("$argon2id$v=19$garbage").is_err());
    }
}
