//! An HTTP endpoint that records the alerts posted to it (webhook and Slack bodies).

/// A local HTTP receiver that records what it is sent; it answers 503 to the first `fail_first`
/// requests on `/hook`.
pub async fn receiver(
    fail_first: usize,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<(String, serde_json::Value)>>>) {
    use axum::extract::{Path, State};
    use axum::http::StatusCode;
    type Seen = std::sync::Arc<std::sync::Mutex<Vec<(String, serde_json::Value)>>>;
    let seen: Seen = Default::default();
    let failures = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(fail_first));
    let app = axum::Router::new()
        .route(
            "/{path}",
            axum::routing::post(
                |State((seen, failures)): State<(Seen, std::sync::Arc<std::sync::atomic::AtomicUsize>)>,
                 Path(path): Path<String>,
                 axum::Json(body): axum::Json<serde_json::Value>| async move {
                    if path == "hook"
                        && failures
                            .fetch_update(
                                std::sync::atomic::Ordering::SeqCst,
                                std::sync::atomic::Ordering::SeqCst,
                                |n| n.checked_sub(1),
                            )
                            .is_ok()
                    {
                        return StatusCode::SERVICE_UNAVAILABLE;
                    }
                    seen.lock().unwrap().push((path, body));
                    StatusCode::OK
                },
            ),
        )
        .with_state((seen.clone(), failures));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}
