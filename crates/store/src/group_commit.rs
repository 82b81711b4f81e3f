//! Group commit: one thread makes writes durable for many waiting writers at once.
//!
//! Why not `Db::flush_async` per write: on sled 0.34 concurrent `flush_async` calls
//! deadlock against transactions (spacejam/sled#1308), and a flush per request
//! costs a disk sync per request. Writers instead enqueue after their transaction
//! commits and wait; the flusher drains the queue, flushes once and wakes them all.
//!
//! Why the extra `fdatasync`: sled's flush on Linux uses `sync_file_range`, which
//! neither flushes the drive's cache nor persists a grown file size, so it survives a
//! process crash but not a power cut. We sync the database file ourselves.

use std::fs::File;
use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;

use tokio::sync::oneshot;

type Waiter = oneshot::Sender<Result<(), String>>;

pub struct GroupCommit {
    queue: Option<mpsc::Sender<Waiter>>,
    thread: Option<JoinHandle<()>>,
}

impl GroupCommit {
    /// Starts the flusher for `db`, whose data lives in `dir`.
    pub fn start(db: sled::Db, dir: &Path) -> std::io::Result<GroupCommit> {
        // sled 0.34 keeps its log and pages in one file named `db`.
        let file = File::open(dir.join("db")).ok();
        let (queue, incoming) = mpsc::channel::<Waiter>();
        let thread = std::thread::Builder::new()
            .name("calgate-commit".into())
            .spawn(move || {
                while let Ok(first) = incoming.recv() {
                    let mut waiters = vec![first];
                    waiters.extend(incoming.try_iter());
                    let result = db
                        .flush()
                        .map_err(|e| e.to_string())
                        .and_then(|_| match &file {
                            Some(f) => f.sync_data().map_err(|e| e.to_string()),
                            None => Ok(()),
                        });
                    if let Err(e) = &result {
                        tracing::error!(error = %e, "could not make writes durable");
                    }
                    for waiter in waiters {
                        let _ = waiter.send(result.clone());
                    }
                }
            })?;
        Ok(GroupCommit {
            queue: Some(queue),
            thread: Some(thread),
        })
    }

    /// Resolves once everything committed before the call is on disk.
    pub async fn sync(&self) -> Result<(), String> {
        let (done, wait) = oneshot::channel();
        self.queue
            .as_ref()
            .ok_or("the store is closing")?
            .send(done)
            .map_err(|_| "the commit thread has stopped".to_owned())?;
        wait.await
            .map_err(|_| "the commit thread has stopped".to_owned())?
    }
}

impl Drop for GroupCommit {
    /// Stops the flusher and waits for it, so the database (and its lock) is released
    /// by the time the last store handle is gone.
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
