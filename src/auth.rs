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
use std::sync::{Arc, Mutex, RwLock};

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
    hash: String,
    principal: P,
}

/// The entries, by lookup: the user name for password entries; `None` for
/// bearer-style secrets (keys, tokens) of the file, which are tried one after
/// another; a digest prefix of the secret ([`lookup_of`]) for generated ones.
type Entries<P> = HashMap<Option<String>, Vec<Entry<P>>>;

/// Finds the principal owning a secret, with a bounded memo of past answers.
///
/// Entries are added and removed at run time (provisioning). A removal drops
/// the memo's answers naming that principal, and an addition its negative
/// answers, so neither a revoked secret nor a new one is answered from memory
/// wrongly; `generation` keeps a check that raced with a change from
/// remembering what it found before the change.
pub struct Verifier<P> {
    entries: RwLock<Entries<P>>,
    cache: Mutex<Memo<P>>,
    /// argon2 checks run so far (each costs tens of ms and 19 MiB).
    checks: std::sync::atomic::AtomicUsize,
}

struct Memo<P> {
    answers: HashMap<[u8; 32], Option<P>>,
    /// Bumped by every change of the entries.
    generation: u64,
}

impl<P: Clone + PartialEq + Send + Sync + 'static> Verifier<P> {
    pub fn new() -> Self {
        Verifier {
            entries: RwLock::new(HashMap::new()),
            cache: Mutex::new(Memo {
                answers: HashMap::new(),
                generation: 0,
            }),
            checks: Default::default(),
        }
    }

    /// Adds a hashed secret; `lookup` is the user name for password entries,
    /// or [`lookup_of`] the secret for generated keys and tokens.
    pub fn add(&self, lookup: Option<&str>, hash: &str, principal: P) {
        let mut entries = self.write_entries();
        entries
            .entry(lookup.map(str::to_owned))
            .or_default()
            .push(Entry {
                hash: hash.to_owned(),
                principal,
            });
        let mut memo = self.lock_cache();
        memo.generation += 1;
        // A secret refused before may be this one.
        memo.answers.retain(|_, answer| answer.is_some());
    }

    /// Removes every entry whose principal `gone` matches; effective at once.
    pub fn remove(&self, gone: impl Fn(&P) -> bool) {
        let mut entries = self.write_entries();
        for bucket in entries.values_mut() {
            bucket.retain(|e| !gone(&e.principal));
        }
        entries.retain(|_, bucket| !bucket.is_empty());
        let mut memo = self.lock_cache();
        memo.generation += 1;
        memo.answers
            .retain(|_, answer| !answer.as_ref().is_some_and(&gone));
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
        if let Some(known) = self.lock_cache().answers.get(&digest) {
            return known.clone();
        }
        // The semaphore is never closed; were it, verifying unthrottled is still correct.
        let _slot = VERIFICATION_SLOTS.acquire().await.ok();
        // Concurrent requests with the same secret: the first one verified it.
        let generation = {
            let memo = self.lock_cache();
            if let Some(known) = memo.answers.get(&digest) {
                return known.clone();
            }
            memo.generation
        };
        let this = Arc::clone(self);
        let lookup = lookup.map(str::to_owned);
        let secret = secret.to_owned();
        self.checks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let found = tokio::task::spawn_blocking(move || {
            // The candidates are copied out: argon2 runs without the lock, so
            // provisioning (which takes it to write) never waits on a check.
            let candidates: Vec<(String, P)> = this
                .read_entries()
                .get(&lookup)?
                .iter()
                .map(|e| (e.hash.clone(), e.principal.clone()))
                .collect();
            candidates
                .into_iter()
                .find(|(hash, _)| matches(hash, secret.as_bytes()))
                .map(|(_, principal)| principal)
        })
        .await
        .unwrap_or(None);
        let mut memo = self.lock_cache();
        // Entries changed meanwhile: answer, but do not remember (the answer
        // may already be stale, e.g. the key was revoked).
        if memo.generation == generation {
            if memo.answers.len() >= CACHE_CAPACITY {
                memo.answers.clear();
            }
            memo.answers.insert(digest, found.clone());
        }
        found
    }

    /// The owner of a bearer-style secret (an API key, a feed token): a
    /// generated one is found by its lookup (one argon2 check), one of the
    /// file among the file's.
    pub async fn verify_bearer(self: &Arc<Self>, secret: &str) -> Option<P> {
        match self.verify(Some(&lookup_of(secret)), secret).await {
            Some(found) => Some(found),
            None => self.verify(None, secret).await,
        }
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, Memo<P>> {
        // A poisoned memo is still a valid memo: every value in it was fully written.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn read_entries(&self) -> std::sync::RwLockReadGuard<'_, Entries<P>> {
        // Entries are replaced whole under the lock: a panic cannot leave half of one.
        self.entries.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_entries(&self) -> std::sync::RwLockWriteGuard<'_, Entries<P>> {
        self.entries.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// The lookup of a generated bearer secret (API key or feed token): a digest
/// prefix, so verifying it costs one argon2 check however many keys exist.
/// 64 bits of a SHA-256 of 256 random bits tell an attacker nothing usable.
pub fn lookup_of(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    hex::encode(&digest[..8])
}

/// A new random bearer secret: `prefix` and 32 random bytes (256 bits) in hex.
pub fn generate_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

impl<P: Clone + PartialEq + Send + Sync + 'static> Default for Verifier<P> {
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
        let v = Verifier::new();
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
        let v = Verifier::new();
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

    /// A removed secret is refused at once although it was remembered, and a
    /// secret refused before is accepted once added.
    #[tokio::test]
    async fn changes_take_effect_at_once() {
        let hash = hash_secret("k1").unwrap();
        let v = Arc::new(Verifier::new());
        assert_eq!(v.verify(Some(&lookup_of("k1")), "k1").await, None);
        v.add(Some(&lookup_of("k1")), &hash, "a");
        v.add(Some("bob"), &hash, "bob");
        assert_eq!(v.verify(Some(&lookup_of("k1")), "k1").await, Some("a"));
        assert_eq!(v.verify(Some("bob"), "k1").await, Some("bob"));
        v.remove(|p| *p == "a");
        assert_eq!(v.verify(Some(&lookup_of("k1")), "k1").await, None);
        assert_eq!(
            v.verify(Some("bob"), "k1").await,
            Some("bob"),
            "others stay"
        );
        let secret = generate_secret("ck_");
        assert_eq!(secret.len(), 3 + 64);
        assert_ne!(secret, generate_secret("ck_"));
    }

    #[test]
    fn rejects_non_phc_strings() {
        assert!(check_hash_format("demo").is_err());
        assert!(check_hash_format("$argon2id$v=19$garbage").is_err());
    }
}
