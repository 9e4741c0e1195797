//! Grouping database statements of jobs that run together: a batcher takes every request waiting
//! (up to its maximum), sends them as one statement in one transaction, and answers each. While
//! one batch is in flight the next gathers, so under load N jobs share one round trip and one
//! synchronous commit; a lone request goes at once.
//!
//! Owns the batch loop (started on first use, restarted if it ever stops) and handing a request
//! back when its batch failed, so the caller can send it alone. It must not decide what a request
//! means (its handler does).

use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};

/// Sends a batch; answers one result per request, in order (`None`: not taken by this batch).
pub(super) type Handler<T, R> = Arc<dyn Fn(Vec<T>) -> BoxFuture<'static, (Vec<T>, Vec<Option<R>>)> + Send + Sync>;

struct Request<T, R> {
    value: T,
    reply: oneshot::Sender<(Option<R>, T)>,
}

/// What became of a submitted request.
pub(super) enum Submitted<T, R> {
    Done(R),
    /// The batch could not take it (it failed, or the batcher is stopping): send it alone.
    Alone(T),
    /// The batch loop went away with the request (the runtime is shutting down).
    Lost,
}

pub(super) struct Batcher<T, R> {
    /// For logs and the restart metric.
    name: &'static str,
    max: usize,
    handler: Handler<T, R>,
    queue: Mutex<Option<mpsc::UnboundedSender<Request<T, R>>>>,
}

impl<T: Send + 'static, R: Send + 'static> Batcher<T, R> {
    pub(super) fn new(name: &'static str, max: usize, handler: Handler<T, R>) -> Batcher<T, R> {
        Batcher { name, max: max.max(1), handler, queue: Mutex::new(None) }
    }

    pub(super) async fn submit(&self, value: T) -> Submitted<T, R> {
        let (reply, answer) = oneshot::channel();
        if let Err(unsent) = self.queue().send(Request { value, reply }) {
            return Submitted::Alone(unsent.0.value);
        }
        match answer.await {
            Ok((Some(result), _)) => Submitted::Done(result),
            Ok((None, value)) => Submitted::Alone(value),
            Err(_) => Submitted::Lost,
        }
    }

    /// The batch loop's queue; a loop that stopped (a panic) is logged and started again.
    fn queue(&self) -> mpsc::UnboundedSender<Request<T, R>> {
        let mut queue = self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match queue.as_ref() {
            Some(tx) if !tx.is_closed() => tx.clone(),
            stopped => {
                if stopped.is_some() {
                    tracing::error!(batcher = self.name, "a batcher stopped; restarting it");
                    metrics::counter!(crate::metrics::LOOP_RESTARTS, "loop" => self.name).increment(1);
                }
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(run(self.max, self.handler.clone(), rx));
                *queue = Some(tx.clone());
                tx
            }
        }
    }
}

/// Takes every request waiting (up to `max`), hands them to `handler` together and answers each.
/// Ends when the batcher is dropped.
async fn run<T, R>(max: usize, handler: Handler<T, R>, mut rx: mpsc::UnboundedReceiver<Request<T, R>>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < max {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let (values, replies): (Vec<T>, Vec<_>) = batch.into_iter().map(|r| (r.value, r.reply)).unzip();
        let (values, results) = handler(values).await;
        let results = results.into_iter().chain(std::iter::repeat_with(|| None));
        for ((value, reply), result) in values.into_iter().zip(replies).zip(results) {
            // A request whose task is gone (aborted at shutdown) needs no answer.
            let _ = reply.send((result, value));
        }
    }
}
