//! Multipart uploads: how many run at once, and one budget for their parts in flight.
//!
//! A file that needs a multipart upload keeps many frames in memory on their way out:
//! the frames queued for it, the part being filled, and the parts being sent, each
//! pinning the frames it was cut from. A backup runs `--parallel` transfers at once, and
//! against a store slower than the disk each one keeps all of that queued: the S3
//! initial backup of the benchmark peaked at 207-219 MB of RSS with 4 multipart uploads
//! of up to 4 parts of 8 MiB each. So, whatever `--parallel` says:
//! - at most [`MULTIPART_AT_ONCE`] files are sent by multipart upload at once
//!   ([`multipart_slot`]; smaller files are not limited by it);
//! - a part in flight holds one of [`PARTS_IN_FLIGHT`] permits of the process, as well
//!   as counting against its upload's own `max_in_flight`, so one upload alone (the tail
//!   of a backup, one large SSTable) still has several parts out.
//!
//! Nothing waits while holding what another waits for: a slot is taken before the file
//! is read, a part permit only by an upload with a full part to send, and both are held
//! only by work that ends on its own (a file being sent, a part request).
//!
//! On S3, GCS, Azure (and memory) parts are numbered by this upload and sent with the
//! store's `MultipartStore` API, each under the `--retry-timeout` budget: a part whose
//! request failed (a connection reset mid-body, an outage) is sent again with the same
//! number from the bytes it holds. A completion whose answer was lost and whose retry
//! finds no upload any more succeeded if the object is there with every byte sent.
//! `file://` uploads (a local temporary file) go through object_store's own upload.

use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use object_store::ObjectStoreExt;
use object_store::multipart::PartId;
use object_store::path::Path as ObjectPath;
use object_store::{MultipartId, MultipartUpload, PutPayload, PutPayloadMut, PutResult};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::task::JoinSet;

use super::options::RetryOptions;
use super::retry;
use super::uploads::UploadJournal;
use super::url::MultipartTarget;

/// Files sent by multipart upload at once by the whole process.
pub const MULTIPART_AT_ONCE: usize = 2;

/// Parts being uploaded at once by the whole process: 32 MiB at the default part size.
pub const PARTS_IN_FLIGHT: usize = 4;

static MULTIPART: Semaphore = Semaphore::const_new(MULTIPART_AT_ONCE);

/// Waits for room to send a file by multipart upload; the room is given back when the
/// permit is dropped.
pub async fn multipart_slot() -> Option<SemaphorePermit<'static>> {
    MULTIPART.acquire().await.ok()
}

static PARTS: LazyLock<Arc<Semaphore>> =
    LazyLock::new(|| Arc::new(Semaphore::new(PARTS_IN_FLIGHT)));

/// Where the parts go.
enum Sink {
    /// Numbered parts of upload `id` at `path` of the bucket's store, each retried.
    Numbered {
        target: MultipartTarget,
        path: ObjectPath,
        id: MultipartId,
        retry: Box<RetryOptions>,
        /// The upload's note in the journal (`store::uploads`), removed once it is
        /// completed or aborted.
        note: Option<std::path::PathBuf>,
        /// Part ids by part number, filled as parts complete.
        done: Vec<Option<PartId>>,
    },
    /// object_store's own upload (`file://`).
    Plain(Box<dyn MultipartUpload>),
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sink::Numbered { path, .. } => write!(f, "Numbered({path})"),
            Sink::Plain(u) => write!(f, "Plain({u:?})"),
        }
    }
}

/// A part request's outcome: its number and id for a numbered part.
type PartDone = object_store::Result<Option<(usize, PartId)>>;

/// One multipart upload, fed in order, sending each part as soon as it is full.
#[derive(Debug)]
pub struct PartUpload {
    sink: Sink,
    buffer: PutPayloadMut,
    part_size: usize,
    max_in_flight: usize,
    budget: Arc<Semaphore>,
    parts: JoinSet<PartDone>,
    /// Parts handed out so far (the next part's number).
    sent_parts: usize,
    /// Bytes handed out so far.
    sent_bytes: u64,
}

impl PartUpload {
    /// Parts of `part_size` bytes (the last one shorter), at most `max_in_flight` of
    /// this upload at once, within the process's [`PARTS_IN_FLIGHT`].
    pub fn new(upload: Box<dyn MultipartUpload>, part_size: usize, max_in_flight: usize) -> Self {
        Self::with_budget(upload, part_size, max_in_flight, PARTS.clone())
    }

    /// Starts an upload of numbered parts to `key` (a repository key) on `target`,
    /// every request retried within `retry`'s budget.
    pub async fn numbered(
        target: &MultipartTarget,
        key: &ObjectPath,
        retry: &RetryOptions,
        part_size: usize,
        max_in_flight: usize,
    ) -> object_store::Result<Self> {
        let path = target.path(key);
        let id = retry::retry(retry, "start multipart upload", |_| {
            target.parts.create_multipart(&path)
        })
        .await?;
        // Noted before any part is sent: a process killed from here on leaves an
        // upload the next writer aborts. A note that cannot be written costs only that.
        let note = target.journal.as_ref().and_then(|j| match j.record(&path, &id) {
            Ok(note) => Some(note),
            Err(e) => {
                tracing::warn!(%path, "cannot note a multipart upload in progress (it is not aborted if this process dies): {e}");
                None
            }
        });
        let sink = Sink::Numbered {
            target: target.clone(),
            path,
            id,
            retry: Box::new(retry.clone()),
            note,
            done: Vec::new(),
        };
        Ok(Self::with_sink(
            sink,
            part_size,
            max_in_flight,
            PARTS.clone(),
        ))
    }

    /// As [`PartUpload::new`], with parts in flight counted in `budget`.
    fn with_budget(
        upload: Box<dyn MultipartUpload>,
        part_size: usize,
        max_in_flight: usize,
        budget: Arc<Semaphore>,
    ) -> Self {
        Self::with_sink(Sink::Plain(upload), part_size, max_in_flight, budget)
    }

    fn with_sink(
        sink: Sink,
        part_size: usize,
        max_in_flight: usize,
        budget: Arc<Semaphore>,
    ) -> Self {
        PartUpload {
            sink,
            buffer: PutPayloadMut::new(),
            part_size: part_size.max(1),
            max_in_flight: max_in_flight.max(1),
            budget,
            parts: JoinSet::new(),
            sent_parts: 0,
            sent_bytes: 0,
        }
    }

    /// Appends `bytes` (without copying them), sending every part they fill; waits while
    /// this upload or the process has as many parts out as allowed.
    pub async fn put(&mut self, mut bytes: Bytes) -> object_store::Result<()> {
        while !bytes.is_empty() {
            let room = self.part_size - self.buffer.content_length();
            if bytes.len() < room {
                self.buffer.push(bytes);
                break;
            }
            self.buffer.push(bytes.split_to(room));
            let part = std::mem::take(&mut self.buffer);
            self.send(part.into()).await?;
        }
        Ok(())
    }

    async fn send(&mut self, part: PutPayload) -> object_store::Result<()> {
        while self.parts.len() >= self.max_in_flight {
            self.join_one().await?;
        }
        let permit = self
            .budget
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| internal(e.to_string()))?;
        let number = self.sent_parts;
        self.sent_parts += 1;
        self.sent_bytes += part.content_length() as u64;
        match &self.sink {
            Sink::Plain(_) => {
                let Sink::Plain(upload) = &mut self.sink else {
                    return Err(internal("multipart sink changed".into()));
                };
                let request = upload.put_part(part);
                self.parts.spawn(async move {
                    let sent = request.await.map(|()| None);
                    drop(permit);
                    sent
                });
            }
            Sink::Numbered {
                target,
                path,
                id,
                retry,
                ..
            } => {
                let (store, path, id, retry) = (
                    target.parts.clone(),
                    path.clone(),
                    id.clone(),
                    retry.clone(),
                );
                self.parts.spawn(async move {
                    let sent = retry::retry(&retry, "part upload", |_| {
                        store.put_part(&path, &id, number, part.clone())
                    })
                    .await
                    .map(|part_id| Some((number, part_id)));
                    drop(permit);
                    sent
                });
            }
        }
        Ok(())
    }

    /// Waits for one part in flight to finish (nothing to do when none is).
    async fn join_one(&mut self) -> object_store::Result<()> {
        match self.parts.join_next().await {
            None => Ok(()),
            Some(Ok(Ok(None))) => Ok(()),
            Some(Ok(Ok(Some((number, part_id))))) => {
                if let Sink::Numbered { done, .. } = &mut self.sink {
                    if done.len() <= number {
                        done.resize(number + 1, None);
                    }
                    done[number] = Some(part_id);
                }
                Ok(())
            }
            Some(Ok(Err(e))) => Err(e),
            Some(Err(join)) => Err(internal(format!("a part upload task failed: {join}"))),
        }
    }

    /// Completes the upload once every part is in.
    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let sent_bytes = self.sent_bytes;
        let sent_parts = self.sent_parts;
        match &mut self.sink {
            Sink::Plain(upload) => upload.complete().await,
            Sink::Numbered {
                target,
                path,
                id,
                retry,
                done,
                ..
            } => {
                let parts: Vec<PartId> = done.iter().take(sent_parts).flatten().cloned().collect();
                if parts.len() != sent_parts {
                    return Err(internal("a part of the upload is missing".into()));
                }
                let (target, path, id) = (&*target, &*path, &*id);
                retry::retry(retry, "complete multipart upload", |attempt| {
                    let parts = parts.clone();
                    async move {
                        match target.parts.complete_multipart(path, id, parts).await {
                            Err(e) if attempt > 0 && !retry::is_transient(&e) => {
                                // An earlier attempt may have completed it: then the
                                // upload is gone and the object holds every byte.
                                match target.objects.head(path).await {
                                    Ok(meta) if meta.size == sent_bytes => Ok(PutResult {
                                        e_tag: meta.e_tag,
                                        version: meta.version,
                                        extensions: Default::default(),
                                    }),
                                    _ => Err(e),
                                }
                            }
                            other => other,
                        }
                    }
                })
                .await
            }
        }
    }

    /// Sends what is left, waits for every part, and completes the upload (the object
    /// appears only now). On any error the upload is aborted.
    pub async fn finish(mut self) -> object_store::Result<PutResult> {
        let mut done = Ok(());
        if self.buffer.content_length() > 0 {
            let part = std::mem::take(&mut self.buffer);
            done = self.send(part.into()).await;
        }
        while done.is_ok() && !self.parts.is_empty() {
            done = self.join_one().await;
        }
        let completed = match done {
            Ok(()) => self.complete().await,
            Err(e) => Err(e),
        };
        match &completed {
            Ok(_) => self.forget_note(),
            Err(_) => {
                let _ = self.abort().await;
            }
        }
        completed
    }

    /// Stops the parts in flight and asks the store to drop the parts it has.
    pub async fn abort(mut self) -> object_store::Result<()> {
        self.parts.shutdown().await;
        let aborted = match &mut self.sink {
            Sink::Plain(upload) => upload.abort().await,
            // One attempt: an upload left behind stays noted, and the next writer
            // aborts it.
            Sink::Numbered {
                target, path, id, ..
            } => target.parts.abort_multipart(path, id).await,
        };
        if aborted.is_ok() {
            self.forget_note();
        }
        aborted
    }

    /// Removes the upload's note from the journal (it is completed or aborted).
    fn forget_note(&mut self) {
        if let Sink::Numbered { note, .. } = &mut self.sink
            && let Some(note) = note.take()
        {
            UploadJournal::forget(&note);
        }
    }
}

fn internal(detail: String) -> object_store::Error {
    object_store::Error::Generic {
        store: "multipart upload",
        source: detail.into(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;
    use object_store::memory::InMemory;
    use object_store::path::Path;
    use object_store::{ObjectStoreExt, UploadPart};

    /// An upload whose parts take a while, counting how many are in flight at once
    /// across every upload sharing `gauge`.
    #[derive(Debug)]
    struct Slow {
        inner: Box<dyn MultipartUpload>,
        gauge: Arc<(AtomicUsize, AtomicUsize)>,
    }

    #[async_trait::async_trait]
    impl MultipartUpload for Slow {
        fn put_part(&mut self, data: PutPayload) -> UploadPart {
            let gauge = self.gauge.clone();
            let inner = self.inner.put_part(data);
            Box::pin(async move {
                let now = gauge.0.fetch_add(1, Ordering::SeqCst) + 1;
                gauge.1.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                gauge.0.fetch_sub(1, Ordering::SeqCst);
                inner.await
            })
        }
        async fn complete(&mut self) -> object_store::Result<PutResult> {
            self.inner.complete().await
        }
        async fn abort(&mut self) -> object_store::Result<()> {
            self.inner.abort().await
        }
    }

    fn data(len: u32) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[tokio::test]
    async fn parts_arrive_whole_and_in_order_whatever_the_chunking() {
        let store = InMemory::new();
        let data = data(100_000);
        // Chunks that straddle parts, fill them exactly, and exceed several at once.
        for (i, chunk) in [1usize, 999, 1000, 1001, 3500, 100_000]
            .into_iter()
            .enumerate()
        {
            let key = Path::from(format!("o{i}"));
            let mut up = PartUpload::new(store.put_multipart(&key).await.unwrap(), 1000, 3);
            for c in data.chunks(chunk) {
                up.put(Bytes::copy_from_slice(c)).await.unwrap();
            }
            up.finish().await.unwrap();
            let got = store.get(&key).await.unwrap().bytes().await.unwrap();
            assert_eq!(got.as_ref(), data.as_slice(), "chunks of {chunk}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn uploads_at_once_share_the_budget_of_parts_in_flight() {
        let store = Arc::new(InMemory::new());
        let gauge = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
        let budget = Arc::new(Semaphore::new(3));
        let data = Bytes::from(data(40_000));
        let mut uploads = JoinSet::new();
        for i in 0..4 {
            let (store, gauge, budget, data) =
                (store.clone(), gauge.clone(), budget.clone(), data.clone());
            uploads.spawn(async move {
                let key = Path::from(format!("o{i}"));
                let inner = store.put_multipart(&key).await.unwrap();
                let slow = Box::new(Slow { inner, gauge });
                // Alone, each upload could have 4 parts out; together they have 3.
                let mut up = PartUpload::with_budget(slow, 1000, 4, budget);
                for c in data.chunks(2500) {
                    up.put(data.slice_ref(c)).await.unwrap();
                }
                up.finish().await.unwrap();
                let got = store.get(&key).await.unwrap().bytes().await.unwrap();
                assert_eq!(got, data);
            });
        }
        while let Some(done) = uploads.join_next().await {
            done.unwrap();
        }
        let most = gauge.1.load(Ordering::SeqCst);
        assert_eq!(most, 3, "parts in flight at most: {most}");
        assert_eq!(budget.available_permits(), 3, "every permit given back");
    }

    #[tokio::test]
    async fn an_aborted_upload_leaves_no_object_and_gives_its_permits_back() {
        let store = InMemory::new();
        let key = Path::from("aborted");
        let budget = Arc::new(Semaphore::new(2));
        let inner = store.put_multipart(&key).await.unwrap();
        let gauge = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
        let mut up =
            PartUpload::with_budget(Box::new(Slow { inner, gauge }), 1000, 4, budget.clone());
        up.put(Bytes::from(vec![7u8; 2500])).await.unwrap();
        assert_eq!(budget.available_permits(), 0, "two parts out");
        up.abort().await.unwrap();
        assert!(store.head(&key).await.is_err(), "no object after abort");
        assert_eq!(budget.available_permits(), 2);
    }
}
