//! `/api/stream`: a WebSocket pushing each second's statistics and every
//! new or updated alert (`{"type": "stats"|"alert"|"hello", "data": …}`).
//! Browsers cannot set headers on a WebSocket, so the token may also come
//! as `?access_token=`. A client more than a few dozen messages behind, or
//! whose socket does not take a message within 5 s, is dropped (close code
//! 1008) rather than buffered for.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::response::{IntoResponse, Response};
use tokio::sync::broadcast::error::RecvError;

use crate::AppState;
use crate::error::ApiError;

const SEND_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn stream(State(st): State<AppState>, ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(r) => {
            return ApiError::new(
                r.status(),
                "not_websocket",
                format!("{} (this route speaks WebSocket)", r.body_text()),
            )
            .into_response();
        }
    };
    let rx = st.monitor.tx.subscribe();
    ws.on_upgrade(move |socket| client(st, socket, rx))
}

async fn send(socket: &mut WebSocket, text: &str) -> bool {
    matches!(tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Text(text.into()))).await, Ok(Ok(())))
}

async fn client(st: AppState, mut socket: WebSocket, mut rx: tokio::sync::broadcast::Receiver<std::sync::Arc<str>>) {
    let c = &st.monitor.counters;
    c.stream_clients.fetch_add(1, Ordering::Relaxed);
    let hello = serde_json::json!({
        "type": "hello",
        "data": { "engine": st.engine.source, "latest": st.monitor.latest() },
    });
    let mut ok = send(&mut socket, &hello.to_string()).await;
    while ok {
        tokio::select! {
            m = rx.recv() => match m {
                Ok(text) => ok = send(&mut socket, &text).await,
                Err(RecvError::Lagged(n)) => {
                    let reason = format!("too slow: {n} messages behind");
                    let frame = CloseFrame { code: 1008, reason: reason.as_str().into() };
                    let _ = tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Close(Some(frame)))).await;
                    ok = false;
                }
                Err(RecvError::Closed) => break,
            },
            incoming = socket.recv() => match incoming {
                // Pings are answered by the library; anything else is ignored.
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    if !ok {
        c.stream_dropped.fetch_add(1, Ordering::Relaxed);
    }
    c.stream_clients.fetch_sub(1, Ordering::Relaxed);
}
