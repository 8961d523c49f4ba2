//! The HTTP server: the routes, and an accept loop of our own (instead of `axum::serve`) so that
//! a handler can have the connection closed without an answer, which fault injection needs.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::Request;
use axum::routing::{any, get, post, put};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::{Service, service_fn};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::api::DropConnection;
use super::{Shared, admin, api};

/// How long shutdown waits for requests in flight (an injected latency can be long).
const DRAIN: Duration = Duration::from_secs(5);

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/_emulator", get(admin::info))
        .route("/_emulator/", get(admin::info))
        .route("/_emulator/chats", get(admin::chats))
        .route("/_emulator/chats/{chat_id}", get(admin::chat))
        .route(
            "/_emulator/chats/{chat_id}/users/{user_id}",
            get(admin::user),
        )
        .route(
            "/_emulator/chats/{chat_id}/members",
            put(admin::members).post(admin::members),
        )
        .route(
            "/_emulator/chats/{chat_id}/members/{user_id}",
            axum::routing::delete(admin::remove_member),
        )
        .route("/_emulator/chats/{chat_id}/bot", put(admin::put_bot))
        .route(
            "/_emulator/people",
            get(admin::people).post(admin::add_person),
        )
        .route(
            "/_emulator/people/{user_id}/resigned",
            put(admin::put_resigned),
        )
        .route(
            "/_emulator/people/{user_id}/departments",
            put(admin::put_departments),
        )
        .route("/_emulator/departments", get(admin::departments))
        .route(
            "/_emulator/requests",
            get(admin::requests).delete(admin::clear_requests),
        )
        .route(
            "/_emulator/faults",
            get(admin::faults)
                .put(admin::put_faults)
                .delete(admin::clear_faults),
        )
        .route("/_emulator/tokens/expire", post(admin::expire_tokens))
        .route("/_emulator/{*rest}", any(admin::not_found))
        .fallback(api::handle)
        .with_state(shared)
}

/// The error that makes hyper close a connection without writing a response.
#[derive(Debug, thiserror::Error)]
#[error("connection dropped by fault injection")]
struct ConnectionDropped;

/// Serves `router` on `listener` until `stop` fires (or its sender is dropped), then lets the
/// requests in flight finish for up to [`DRAIN`].
pub async fn serve(listener: TcpListener, router: Router, mut stop: oneshot::Receiver<()>) {
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!("emulator: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        // Small JSON answers: do not let Nagle hold them back.
        let _ = stream.set_nodelay(true);
        let inner = TowerToHyperService::new(router.clone());
        let service = service_fn(move |req: Request<Incoming>| {
            let answer = inner.call(req);
            async move {
                let response = match answer.await {
                    Ok(response) => response,
                    Err(never) => match never {},
                };
                if response.extensions().get::<DropConnection>().is_some() {
                    Err(ConnectionDropped)
                } else {
                    Ok(response)
                }
            }
        });
        let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            // A client that goes away or a dropped connection ends here; nothing to report.
            let _ = conn.await;
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(DRAIN, graceful.shutdown()).await;
}
