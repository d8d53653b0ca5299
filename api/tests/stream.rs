//! The live stream's back-pressure: a client that stops reading is dropped
//! once it falls behind; it never makes the server buffer without bound.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tapstream_api::auth::{self, Claims, Role};
use tapstream_api::{ApiConfig, AppState, EngineLink};

fn token(st: &AppState) -> String {
    let uid =
        tapstream_api::routes::users::create_user(&st.store, "watcher", Role::Viewer, "watcher-password-1").unwrap();
    let (sid, _) = auth::new_session(&st.store, uid, "127.0.0.1", Duration::from_secs(600)).unwrap();
    let now = tapstream_api::store::now_ns() / 1_000_000_000;
    auth::issue_access(
        &st.keys,
        &Claims { sub: "watcher".into(), uid, role: Role::Viewer, sid, iat: now, exp: now + 600 },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped_and_a_reader_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let st = AppState::open(ApiConfig::for_data_dir(dir.path()), EngineLink::default()).unwrap();
    let tok = token(&st);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(tapstream_api::serve(st.clone(), listener, std::future::pending()));
    let url = format!("ws://{addr}/api/stream?access_token={tok}");

    // Without a token the handshake is refused.
    let e = tokio_tungstenite::connect_async(format!("ws://{addr}/api/stream")).await.unwrap_err();
    assert!(e.to_string().contains("401"), "{e}");

    // A reader gets the hello, then what is published.
    let (mut reader, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let hello = reader.next().await.unwrap().unwrap().into_text().unwrap();
    assert!(hello.contains(r#""type":"hello""#), "{hello}");
    // A client that never reads.
    let (stalled, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let t0 = Instant::now();
    while st.monitor.counters.stream_clients.load(Ordering::Relaxed) < 2 {
        assert!(t0.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    st.monitor.publish(serde_json::json!({ "type": "stats", "data": { "n": 0 } }));
    let first = reader.next().await.unwrap().unwrap().into_text().unwrap();
    assert!(first.contains(r#""n":0"#), "{first}");

    // Flood: far more than the socket buffers and the backlog hold.
    let big = "x".repeat(64 * 1024);
    let reading = tokio::spawn(async move {
        let mut n = 0usize;
        while let Some(Ok(m)) = reader.next().await {
            if m.is_close() {
                break;
            }
            n += 1;
        }
        n
    });
    let t0 = Instant::now();
    let mut sent = 0;
    while st.monitor.counters.stream_dropped.load(Ordering::Relaxed) == 0 {
        assert!(t0.elapsed() < Duration::from_secs(60), "the stalled client was never dropped after {sent} messages");
        // About 100 MB/s: more than a stalled socket absorbs, well within
        // what a reading client takes on loopback.
        for _ in 0..8 {
            st.monitor.publish(serde_json::json!({ "type": "stats", "data": { "pad": big } }));
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Dropped: one client left, and it is the reader.
    let t0 = Instant::now();
    while st.monitor.counters.stream_clients.load(Ordering::Relaxed) != 1 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "clients: {}",
            st.monitor.counters.stream_clients.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(st.monitor.counters.stream_dropped.load(Ordering::Relaxed), 1);
    drop(stalled);
    // The reader got everything up to now (it was never dropped).
    st.monitor.publish(serde_json::json!({ "type": "stats", "data": { "n": "last" } }));
    tokio::time::sleep(Duration::from_millis(500)).await;
    reading.abort();
    assert_eq!(st.monitor.counters.stream_dropped.load(Ordering::Relaxed), 1);
}
