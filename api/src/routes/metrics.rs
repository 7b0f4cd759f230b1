//! `GET /metrics`: the whole service's numbers in Prometheus' text format,
//! whichever worker answers. For scrapers beside the service; nginx refuses
//! it from outside. Not part of the OpenAPI document: it is not API.

use poem::web::Data;
use poem::{handler, Response};

use crate::metrics::{Snapshot, CONTENT_TYPE};
use crate::state::AppState;

#[handler]
pub async fn metrics(state: Data<&AppState>) -> Response {
    let mut total = state.snapshot();
    if let Some((dir, owner)) = state.metrics.shared().cloned() {
        // File reads under a lock: off the async threads.
        let others = tokio::task::spawn_blocking(move || dir.collect(&owner)).await;
        match others {
            Ok(Ok(others)) => total.merge(&others),
            Ok(Err(err)) => tracing::warn!(error = %err, "other workers' metrics unreadable"),
            Err(err) => tracing::warn!(error = %err, "collecting other workers' metrics failed"),
        }
    }
    text(&total)
}

fn text(snapshot: &Snapshot) -> Response {
    Response::builder()
        .content_type(CONTENT_TYPE)
        .body(snapshot.render())
}
