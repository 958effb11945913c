//! The tracker over HTTP: the axum router and handlers around a shared
//! [`Registry`], which only parse, lock and answer, and the ways to serve it.

use std::{
    future::Future,
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
    time::Instant,
};

use axum::{
    extract::{rejection::JsonRejection, ConnectInfo, DefaultBodyLimit, Path, State},
    http::{header, Method, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Extension, Json, Router,
};
use shoal_mesh::hints::{
    is_stream_id, Announce, ErrorBody, InvalidAnnounce, ReflectorAnnounce, StreamList,
};
use tower_http::cors::{Any, CorsLayer};

use super::registry::{AnnounceError, Registry, TrackerConfig};

type Shared = Arc<Mutex<Registry>>;

fn lock(registry: &Shared) -> std::sync::MutexGuard<'_, Registry> {
    // Soft state: after a panic elsewhere, serving what is there beats failing.
    registry.lock().unwrap_or_else(PoisonError::into_inner)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = ErrorBody {
        error: message.into(),
    };
    (status, Json(body)).into_response()
}

/// The tracker's HTTP API, without a listener.
pub fn router(config: TrackerConfig) -> Router {
    router_over(Arc::new(Mutex::new(Registry::new(config, rand::random()))))
}

/// The HTTP API over a registry the caller holds too (a benchmark fills it
/// first).
pub fn router_over(registry: Arc<Mutex<Registry>>) -> Router {
    let max_body = lock(&registry).config().max_body_bytes;
    // Browsers (dashboards) may read; only peers announce.
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET]);
    Router::new()
        .route("/v1/announce", post(announce))
        .route("/v1/reflectors", post(reflect))
        .route("/v1/streams", get(streams))
        .route("/v1/streams/{stream}", get(stream_detail))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(cors)
        .with_state(registry)
}

async fn announce(
    State(registry): State<Shared>,
    remote: Option<Extension<ConnectInfo<SocketAddr>>>,
    body: Result<Json<Announce>, JsonRejection>,
) -> Response {
    let a = match body {
        Ok(Json(a)) => a,
        Err(rejection) => {
            tracing::debug!(%rejection, "bad announce");
            return error(rejection.status(), rejection.body_text());
        }
    };
    let remote = remote.map(|Extension(ConnectInfo(addr))| addr.ip());
    let result = lock(&registry).announce(a, remote, Instant::now());
    match result {
        Ok(hints) => Json(hints).into_response(),
        Err(e) => refused(&registry, e),
    }
}

async fn reflect(
    State(registry): State<Shared>,
    body: Result<Json<ReflectorAnnounce>, JsonRejection>,
) -> Response {
    let a = match body {
        Ok(Json(a)) => a,
        Err(rejection) => {
            tracing::debug!(%rejection, "bad reflector announce");
            return error(rejection.status(), rejection.body_text());
        }
    };
    let result = lock(&registry).reflect(a, Instant::now());
    match result {
        Ok(assignments) => Json(assignments).into_response(),
        Err(e) => refused(&registry, e),
    }
}

/// The answer to an announce the registry refused: 400 when it breaks the
/// rules, 503 with `Retry-After` when a bound is reached.
fn refused(registry: &Shared, e: AnnounceError) -> Response {
    match e {
        AnnounceError::Invalid(e) => {
            tracing::debug!(error = %e, "invalid announce");
            error(StatusCode::BAD_REQUEST, e.to_string())
        }
        e @ AnnounceError::Full(_) => {
            let retry = lock(registry).config().interval_s.to_string();
            let mut resp = error(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
            if let Ok(v) = retry.parse() {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            resp
        }
    }
}

async fn streams(State(registry): State<Shared>) -> Json<StreamList> {
    let streams = lock(&registry).streams(Instant::now());
    Json(StreamList { streams })
}

async fn stream_detail(State(registry): State<Shared>, Path(stream): Path<String>) -> Response {
    if !is_stream_id(&stream) {
        return error(
            StatusCode::BAD_REQUEST,
            InvalidAnnounce::StreamId.to_string(),
        );
    }
    match lock(&registry).stream_detail(&stream, Instant::now()) {
        Some(detail) => Json(detail).into_response(),
        None => error(StatusCode::NOT_FOUND, "no such stream"),
    }
}

/// Serves the tracker on `listener` until the task is dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: TrackerConfig,
) -> std::io::Result<()> {
    serve_with_shutdown(listener, config, std::future::pending()).await
}

/// Serves until `shutdown` completes, then finishes in-flight requests.
pub async fn serve_with_shutdown(
    listener: tokio::net::TcpListener,
    config: TrackerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, interval_s = config.interval_s, "tracker serving");
    }
    let app = router(config).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Binds `addr` (port 0 for an ephemeral one) and serves in a task: for tests
/// and the lab. Abort the handle to stop.
pub async fn spawn(
    addr: SocketAddr,
    config: TrackerConfig,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        if let Err(e) = serve(listener, config).await {
            tracing::error!(error = %e, "tracker stopped");
        }
    });
    Ok((bound, task))
}

/// A tracker serving in a task, from [`start`].
#[derive(Debug)]
pub struct RunningTracker {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningTracker {
    /// Stops serving and closes every connection once its request in
    /// flight is answered: aborting the task alone would leave keep-alive
    /// connections answering, which a client would not see as a tracker down.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Whether it still serves or finishes requests in flight.
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }
}

impl Drop for RunningTracker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Binds `addr` (port 0 for an ephemeral one) and serves in a task until
/// [`RunningTracker::stop`]: for tests and the lab.
pub async fn start(addr: SocketAddr, config: TrackerConfig) -> std::io::Result<RunningTracker> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    };
    let task = tokio::spawn(async move {
        if let Err(e) = serve_with_shutdown(listener, config, shutdown).await {
            tracing::error!(error = %e, "tracker stopped");
        }
    });
    Ok(RunningTracker {
        addr: bound,
        stop: Some(stop),
        task,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;
    use shoal_mesh::hints::{HintsError, ReflectorAnnounce, Role, StreamInfo, TrackerClient};

    use super::*;
    use crate::tracker::fixtures::*;

    async fn start(config: TrackerConfig) -> (String, tokio::task::JoinHandle<()>) {
        let (addr, task) = spawn(([127, 0, 0, 1], 0).into(), config).await.unwrap();
        (format!("http://{addr}"), task)
    }

    fn raw_client() -> reqwest::Client {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap()
    }

    async fn post_raw(
        base: &str,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> (u16, String) {
        let mut req = raw_client().post(format!("{base}/v1/announce")).body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let resp = req.send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    #[tokio::test]
    async fn announce_streams_and_detail_over_http() {
        let (base, task) = start(TrackerConfig::default()).await;
        let client = TrackerClient::new(&base).unwrap();
        let mut seeder = peer("seed", "127.0.0.1", Role::Seeder, 0, 8);
        seeder.name = Some("demo".into());
        seeder.http = Some("http://127.0.0.1:8080".into());
        seeder.counters = json!({ "pieces_sent": 12 });
        let hints = client.announce(&seeder).await.unwrap();
        assert!(hints.candidates.is_empty() && hints.seeders.is_empty());
        client
            .announce(&viewer("v1", "127.0.0.1", 0))
            .await
            .unwrap();
        let hints = client
            .announce(&viewer("v2", "127.0.0.1", 0))
            .await
            .unwrap();
        let mut cands = ids(&hints);
        cands.sort_unstable();
        assert_eq!(cands, ["seed", "v1"]);
        assert_eq!(hints.seeders[0].peer_id, "seed");
        assert_eq!(hints.interval_s, 5);

        let streams = client.streams().await.unwrap();
        let expected = StreamInfo {
            stream: stream(1),
            name: Some("demo".into()),
            viewers: 2,
            seeders: 1,
        };
        assert_eq!(streams, [expected]);

        let detail: serde_json::Value = raw_client()
            .get(format!("{base}/v1/streams/{}", stream(1)))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(detail["name"], "demo");
        assert_eq!(detail["peers"][0]["counters"]["pieces_sent"], 12);
        assert_eq!(detail["peers"].as_array().unwrap().len(), 3);
        task.abort();
    }

    #[tokio::test]
    async fn bad_requests_are_refused_and_serving_goes_on() {
        let (base, task) = start(TrackerConfig {
            max_body_bytes: 1024,
            ..TrackerConfig::default()
        })
        .await;
        let json_ct = Some("application/json");
        let (status, body) = post_raw(&base, json_ct, "{not json").await;
        assert_eq!(status, 400, "{body}");
        assert!(serde_json::from_str::<ErrorBody>(&body).is_ok(), "{body}");
        let (status, _) = post_raw(&base, json_ct, r#"{"stream": 5}"#).await;
        assert_eq!(status, 422);
        let valid = serde_json::to_string(&viewer("a", "127.0.0.1", 0)).unwrap();
        let (status, _) = post_raw(&base, Some("text/plain"), valid.clone()).await;
        assert_eq!(status, 415);
        let (status, _) = post_raw(&base, None, valid).await;
        assert_eq!(status, 415);

        let mut big = viewer("a", "127.0.0.1", 0);
        big.counters = json!({ "pad": "x".repeat(2000) });
        let (status, _) = post_raw(&base, json_ct, serde_json::to_vec(&big).unwrap()).await;
        assert_eq!(status, 413);

        let mut bad = viewer("a", "127.0.0.1", 0);
        bad.stream = "not-hex".into();
        let (status, body) = post_raw(&base, json_ct, serde_json::to_vec(&bad).unwrap()).await;
        assert_eq!(status, 400);
        let err: ErrorBody = serde_json::from_str(&body).unwrap();
        assert!(err.error.contains("stream id"), "{}", err.error);
        let client = TrackerClient::new(&base).unwrap();
        match client.announce(&bad).await {
            Err(HintsError::Status {
                status: 400,
                message,
            }) => {
                assert!(message.contains("stream id"), "{message}")
            }
            other => panic!("expected a 400, got {other:?}"),
        }

        for (path, want) in [
            ("/nope", 404),
            ("/v1/announce/x", 404),
            ("/v1/streams/zz", 400),
            (&format!("/v1/streams/{}", stream(9)), 404),
            ("/v1/announce", 405),
        ] {
            let resp = raw_client()
                .get(format!("{base}{path}"))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), want, "{path}");
        }

        // Still serving after all that.
        let resp = raw_client()
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(resp.text().await.unwrap(), "ok");
        task.abort();
    }

    #[tokio::test]
    async fn a_full_tracker_answers_503_with_retry_after() {
        let (base, task) = start(TrackerConfig {
            max_streams: 1,
            ..TrackerConfig::default()
        })
        .await;
        let client = TrackerClient::new(&base).unwrap();
        client.announce(&viewer("a", "127.0.0.1", 0)).await.unwrap();
        let mut other = viewer("a", "127.0.0.1", 0);
        other.stream = stream(2);
        let resp = raw_client()
            .post(format!("{base}/v1/announce"))
            .json(&other)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 503);
        assert_eq!(resp.headers()["retry-after"], "5");
        task.abort();
    }

    #[tokio::test]
    async fn reflectors_are_assigned_over_http_and_bad_ones_refused() {
        let (base, task) = start(TrackerConfig::default()).await;
        let client = TrackerClient::new(&base).unwrap();
        client
            .announce(&peer("seed", "127.0.0.1", Role::Seeder, 0, 8))
            .await
            .unwrap();
        client
            .announce(&viewer("v1", "127.0.0.1", 0))
            .await
            .unwrap();
        let mut r0 = reflector("r0", 64);
        r0.carrying = vec![stream(1).to_uppercase()];
        let answer = client.reflect(&r0).await.unwrap();
        assert_eq!(answer.interval_s, 5);
        assert_eq!(answer.streams.len(), 1);
        assert_eq!(answer.streams[0].stream, stream(1));
        assert_eq!(answer.streams[0].parents[0].peer_id, "seed");

        let detail: serde_json::Value = raw_client()
            .get(format!("{base}/v1/streams/{}", stream(1)))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let tree = &detail["reflectors"][0];
        assert_eq!(tree["peer_id"], "r0");
        assert_eq!(tree["parents"][0]["role"], "seeder");
        assert_eq!(tree["carrying"], true);

        for (bad, says) in [
            (reflector("r 1", 64), "peer_id"),
            (reflector("r1", 0), "fan_out"),
            (
                ReflectorAnnounce {
                    carrying: vec!["nope".into()],
                    ..reflector("r1", 1)
                },
                "carrying",
            ),
            (
                ReflectorAnnounce {
                    failure_domain: Some("d".repeat(65)),
                    ..reflector("r1", 1)
                },
                "failure_domain",
            ),
        ] {
            match client.reflect(&bad).await {
                Err(HintsError::Status {
                    status: 400,
                    message,
                }) => assert!(message.contains(says), "{message}"),
                other => panic!("expected a 400, got {other:?}"),
            }
        }
        let resp = raw_client()
            .post(format!("{base}/v1/reflectors"))
            .json(&serde_json::json!({ "peer_id": "r1" }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 422, "fan_out is required");
        task.abort();
    }

    #[tokio::test]
    async fn client_reports_unreachable_tracker() {
        // Bind then drop, so the port is (very likely) closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = TrackerClient::new(&format!("http://127.0.0.1:{port}")).unwrap();
        let err = client.streams().await.unwrap_err();
        assert!(matches!(err, HintsError::Transport(_)), "{err:?}");
    }
}
