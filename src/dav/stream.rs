//! Multistatus answers written while they are sent.
//!
//! A collection-wide answer (PROPFIND Depth 1, calendar-query, sync-collection) is
//! produced on a blocking thread, member by member, into chunks of
//! [`CHUNK_BYTES`] that go out through a bounded channel: the server holds a few
//! chunks of the answer at a time, whatever the size of the collection, and a
//! client that stops reading stops the producer. An error before the first chunk
//! still becomes a proper error response; after it, the status line is gone, so
//! the connection is cut and the client sees a truncated (invalid) body.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::error::DavError;
use super::node::Ctx;
use super::xml;
use crate::app::{App, UserPrincipal};
use crate::http::{Body, BoxError, channel_body, full};

/// Size at which a chunk is handed to the connection.
pub const CHUNK_BYTES: usize = 64 * 1024;
/// Chunks buffered between producer and connection.
const CHUNKS_IN_FLIGHT: usize = 4;

/// What a producer writes its responses into.
pub struct Sink {
    framing: Framing,
    writer: xml::MultistatusWriter,
    buf: String,
    tx: mpsc::Sender<Result<Bytes, BoxError>>,
    head: Option<oneshot::Sender<Head>>,
}

/// The client went away; the producer should stop.
#[derive(Debug)]
pub struct ClientGone;

impl From<ClientGone> for DavError {
    fn from(_: ClientGone) -> DavError {
        DavError::new(StatusCode::BAD_REQUEST, "the client closed the connection")
    }
}

/// What the streamed document is.
enum Framing {
    /// A 207 multistatus: responses written with the sink's XML writer.
    Multistatus,
    /// One VCALENDAR (a whole collection as `text/calendar`): its components are
    /// written as text, this closes it.
    Calendar,
}

enum Head {
    /// The answer is longer than a chunk: it follows through the channel.
    Streaming,
    /// The whole (short) answer.
    Complete(String),
    Failed(DavError),
}

impl Sink {
    pub fn write(&mut self, response: &xml::Response) -> Result<(), ClientGone> {
        self.writer.write_response(&mut self.buf, response);
        self.sent()
    }

    /// A response as this document's writer would write it, without writing it.
    pub fn render(&mut self, response: &xml::Response) -> String {
        let mut text = String::new();
        self.writer.write_response(&mut text, response);
        text
    }

    /// Appends what `write` produces (responses already rendered).
    pub fn write_with(&mut self, write: impl FnOnce(&mut String)) -> Result<(), ClientGone> {
        write(&mut self.buf);
        self.sent()
    }

    /// Appends responses rendered earlier, passed on without a copy.
    pub fn write_bytes(&mut self, mut bytes: Bytes) -> Result<(), ClientGone> {
        if bytes.is_empty() {
            return Ok(());
        }
        if !self.buf.is_empty() {
            let chunk = std::mem::replace(&mut self.buf, String::with_capacity(CHUNK_BYTES / 4));
            self.start_streaming();
            self.send(Bytes::from(chunk))?;
        }
        while !bytes.is_empty() {
            let piece = bytes.split_to(bytes.len().min(CHUNK_BYTES));
            self.start_streaming();
            self.send(piece)?;
        }
        Ok(())
    }

    fn start_streaming(&mut self) {
        if let Some(head) = self.head.take() {
            let _ = head.send(Head::Streaming);
        }
    }

    fn send(&mut self, chunk: Bytes) -> Result<(), ClientGone> {
        self.tx.blocking_send(Ok(chunk)).map_err(|_| ClientGone)
    }

    /// Hands a full chunk to the connection.
    fn sent(&mut self) -> Result<(), ClientGone> {
        if self.buf.len() >= CHUNK_BYTES {
            self.start_streaming();
            let chunk = std::mem::replace(
                &mut self.buf,
                String::with_capacity(CHUNK_BYTES + CHUNK_BYTES / 4),
            );
            self.send(Bytes::from(chunk))?;
        }
        Ok(())
    }

    fn finish(mut self, sync_token: Option<&str>) {
        match self.framing {
            Framing::Multistatus => self.buf.push_str(&self.writer.end(sync_token)),
            Framing::Calendar => self.buf.push_str("END:VCALENDAR\r\n"),
        }
        match self.head.take() {
            Some(head) => {
                let _ = head.send(Head::Complete(self.buf));
            }
            None => {
                let _ = self.tx.blocking_send(Ok(Bytes::from(self.buf)));
            }
        }
    }
}

/// A 207 Multi-Status whose responses `produce` writes; it returns the sync token
/// to close the answer with, if any.
pub async fn multistatus<F>(ctx: &Ctx<'_>, produce: F) -> Result<Response<Body>, DavError>
where
    F: FnOnce(&Ctx<'_>, &mut Sink) -> Result<Option<String>, DavError> + Send + 'static,
{
    let begin = xml::MultistatusWriter::new().begin();
    let mut resp = stream(ctx, Framing::Multistatus, begin, produce).await?;
    *resp.status_mut() = StatusCode::MULTI_STATUS;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml; charset=utf-8"),
    );
    Ok(resp)
}

/// A 200 `text/calendar` answer: `begin` (`BEGIN:VCALENDAR` and the calendar's
/// properties), the components `produce` writes with [`Sink::write_with`], and
/// `END:VCALENDAR`.
pub async fn calendar<F>(
    ctx: &Ctx<'_>,
    begin: String,
    produce: F,
) -> Result<Response<Body>, DavError>
where
    F: FnOnce(&Ctx<'_>, &mut Sink) -> Result<(), DavError> + Send + 'static,
{
    let mut resp = stream(ctx, Framing::Calendar, begin, |ctx, sink| {
        produce(ctx, sink).map(|()| None)
    })
    .await?;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/calendar; charset=utf-8"),
    );
    Ok(resp)
}

async fn stream<F>(
    ctx: &Ctx<'_>,
    framing: Framing,
    begin: String,
    produce: F,
) -> Result<Response<Body>, DavError>
where
    F: FnOnce(&Ctx<'_>, &mut Sink) -> Result<Option<String>, DavError> + Send + 'static,
{
    let app: Arc<App> = Arc::clone(ctx.app);
    let user: UserPrincipal = ctx.user.clone();
    let tenant_id = ctx.tenant.id.clone();
    let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let (head_tx, head_rx) = oneshot::channel();
    tokio::task::spawn_blocking(move || {
        let Some(tenant) = app.tenant(&tenant_id) else {
            let _ = head_tx.send(Head::Failed(DavError::not_found()));
            return;
        };
        let ctx = Ctx {
            app: &app,
            user: &user,
            tenant: &tenant,
        };
        let mut sink = Sink {
            framing,
            buf: begin,
            writer: xml::MultistatusWriter::new(),
            tx,
            head: Some(head_tx),
        };
        match produce(&ctx, &mut sink) {
            Ok(token) => sink.finish(token.as_deref()),
            Err(e) => match sink.head.take() {
                Some(head) => {
                    let _ = head.send(Head::Failed(e));
                }
                // An error frame makes the connection cut the answer short.
                None => {
                    warn!(error = %e, "answer aborted after it started streaming");
                    let _ = sink.tx.blocking_send(Err(e.to_string().into()));
                }
            },
        }
    });
    let body = match head_rx.await {
        Ok(Head::Complete(text)) => full(text),
        Ok(Head::Streaming) => channel_body(rx),
        Ok(Head::Failed(e)) => return Err(e),
        Err(_) => return Err(DavError::internal("the answer could not be produced")),
    };
    Ok(Response::new(body))
}
