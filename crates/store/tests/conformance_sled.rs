//! The sled backend against the store conformance suite (`calgate_store::conformance`),
//! each check on a fresh database in its own temporary directory.

use std::sync::Arc;

use calgate_store::{Backend, ObjectStore, Store, conformance};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_passes_the_conformance_suite() {
    // The directories outlive the stores opened in them (the suite drops each
    // store after its check).
    let mut dirs = Vec::new();
    let ran = conformance::run_all(|| {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = Store::open(dir.path()).expect("store opens");
        dirs.push(dir);
        std::future::ready(store)
    })
    .await;
    assert_eq!(ran, conformance::CHECKS.len());
}

/// The traits are object-safe: an engine can hold `Arc<dyn Backend>` (or any one
/// aggregate trait), and the checks run through it too (each on a fresh store).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checks_run_through_a_trait_object() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let open = |name: &str| Store::open(&dir.path().join(name)).expect("store opens");
    let store: Arc<dyn Backend> = Arc::new(open("whole"));
    conformance::booking_create_read_replace(&*store).await;
    let objects: Arc<dyn ObjectStore> = Arc::new(open("objects"));
    assert!(objects.objects("t", "s").expect("objects").is_empty());
    objects.flush().await.expect("flush");
}
