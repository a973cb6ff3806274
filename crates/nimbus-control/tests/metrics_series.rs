//! `GET /v1/metrics/series` over HTTP: a node's data API with an observer sampling every 100 ms
//! answers each component's per-step requests, errors and latency quantiles, under the tokens
//! `/metrics` takes, and refuses bad ranges.
use std::sync::Arc;
use std::time::{Duration, Instant};

use nimbus_control::{DataAuth, DataState, MetricsSeries, NewToken, Role, Store, Tokens};
use nimbus_observe::{ObserveConfig, Observer};

struct Api {
    base: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Api {
    async fn get(&self, path: &str, token: Option<&str>) -> (u16, serde_json::Value) {
        let mut req = self.client.get(format!("{}{path}", self.base));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap_or_default())
    }
}

/// The data API over `observer`, and an admin token and a token limited to app `shop`.
async fn serve(observer: Observer) -> (Api, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("control.redb")).unwrap());
    let tokens = Tokens::new(store.clone(), Arc::new(nimbus_control::Authorizer::new(store)));
    let token = |role, apps: &[&str]| {
        let apps = apps.iter().map(ToString::to_string).collect();
        tokens.create(&NewToken { name: "series test".into(), role, apps, ..NewToken::default() }).unwrap().token
    };
    let (admin, limited) = (token(Role::Admin, &[]), token(Role::Admin, &["shop"]));
    let state = DataState {
        bus: None,
        kv: None,
        auth: DataAuth::Tokens { tokens, dev: false },
        observer,
        workflows: None,
        ingress: None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, nimbus_control::data_router(Arc::new(state))).await });
    (Api { base, client: reqwest::Client::new(), _dir: dir }, admin, limited)
}

#[tokio::test]
async fn the_series_has_each_steps_requests_errors_and_quantiles() {
    let observer =
        Observer::start(ObserveConfig { series_step: Duration::from_millis(100), ..Default::default() }).unwrap();
    let web = observer.component("shop", "web");
    let idle = observer.component("shop", "idle");
    let (api, admin, limited) = serve(observer.clone()).await;

    for _ in 0..9 {
        web.metrics.http_request(200, Duration::from_millis(1));
    }
    web.metrics.http_request(503, Duration::from_millis(100));
    web.metrics.instantiated(true, Duration::from_millis(3));

    let deadline = Instant::now() + Duration::from_secs(5);
    let series = loop {
        let (status, body) = api.get("/v1/metrics/series?app=shop", Some(&admin)).await;
        assert_eq!(status, 200, "{body}");
        let series: MetricsSeries = serde_json::from_value(body).unwrap();
        let counted: u64 = series.series.iter().flat_map(|s| &s.points).map(|p| p.requests).sum();
        if counted == 10 || Instant::now() > deadline {
            break series;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(series.step_s, 0.1);
    assert_eq!(series.series.len(), 1, "a component that never did anything has no series");
    let web_series = &series.series[0];
    assert_eq!((web_series.app.as_str(), web_series.component.as_str()), ("shop", "web"));
    let busy: Vec<_> = web_series.points.iter().filter(|p| p.requests > 0).collect();
    let sum = |f: fn(&&nimbus_control::MetricsPoint) -> u64| busy.iter().map(f).sum::<u64>();
    assert_eq!((sum(|p| p.requests), sum(|p| p.errors), sum(|p| p.cold), sum(|p| p.warm)), (10, 1, 1, 0));
    for p in &busy {
        let (p50, p99) = (p.p50_ms.unwrap(), p.p99_ms.unwrap());
        if p.errors == 0 {
            assert!(p50 > 0.8 && p50 <= 1.6 && p99 <= 1.6, "{p:?}: all in the 1 ms requests' bucket");
        } else {
            assert!(p99 > 51.2 && p99 <= 102.4, "{p:?}: p99 in the 100 ms request's bucket");
        }
        assert!((p.rps - p.requests as f64 * 10.0).abs() < 1e-9, "{p:?}: a step is 0.1 s");
        assert_eq!(p.error_rate, Some(p.errors as f64 / p.requests as f64));
    }
    if let [p] = busy[..] {
        // The usual case: all ten in one step.
        assert_eq!((p.error_rate, p.rps), (Some(0.1), 100.0));
        let p50 = p.p50_ms.unwrap();
        assert!(p50 > 0.8 && p50 <= 1.6, "p50 {p50} ms");
    }
    assert!(web_series.points.windows(2).all(|w| w[0].t < w[1].t), "oldest first");
    let quiet = web_series.points.iter().find(|p| p.requests == 0);
    if let Some(quiet) = quiet {
        assert_eq!((quiet.error_rate, quiet.p50_ms), (None, None));
    }

    // The raw JSON has the documented field names and nulls.
    let (_, raw) = api.get("/v1/metrics/series?component=web&range_s=60", Some(&admin)).await;
    let point = &raw["series"][0]["points"][0];
    for field in ["t", "requests", "rps", "errors", "error_rate", "p50_ms", "p95_ms", "p99_ms", "cold", "warm"] {
        assert!(point.get(field).is_some(), "{field} in {point}");
    }
    for field in ["queue_depth", "instances", "memory_bytes"] {
        assert!(point.get(field).is_some(), "{field} in {point}");
    }
    let (_, other) = api.get("/v1/metrics/series?app=elsewhere", Some(&admin)).await;
    assert_eq!(other["series"], serde_json::json!([]));
    drop(idle);

    // Same callers as /metrics: a token, for every app.
    assert_eq!(api.get("/v1/metrics/series", None).await.0, 401);
    let (status, body) = api.get("/v1/metrics/series?app=shop", Some(&limited)).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(api.get("/metrics", Some(&limited)).await.0, 403);

    // Bad ranges and parameters are refused with what is allowed.
    for bad in ["range_s=0", "range_s=3601", "range_s=abc", "since=1"] {
        let (status, body) = api.get(&format!("/v1/metrics/series?{bad}"), Some(&admin)).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (_, body) = api.get("/v1/metrics/series?range_s=3601", Some(&admin)).await;
    assert!(body.to_string().contains("1 to 3600"), "{body}");
    assert_eq!(api.get("/v1/metrics/series?range_s=3600", Some(&admin)).await.0, 200);
}

#[tokio::test]
async fn without_metrics_the_series_is_not_found_as_metrics_are() {
    let observer = Observer::start(ObserveConfig { metrics: false, traces: false, ..Default::default() }).unwrap();
    let (api, admin, _) = serve(observer).await;
    let (status, body) = api.get("/v1/metrics/series", Some(&admin)).await;
    assert_eq!(status, 404);
    let (_, metrics) = api.get("/metrics", Some(&admin)).await;
    assert_eq!(body, metrics, "the same answer as /metrics");
    assert!(body["error"].as_str().unwrap().contains("metrics are off"), "{body}");
}

#[tokio::test]
async fn one_answer_holds_at_most_a_hundred_components() {
    let observer =
        Observer::start(ObserveConfig { series_step: Duration::from_millis(100), ..Default::default() }).unwrap();
    let components: Vec<_> = (0..101).map(|i| observer.component(&format!("app{}", i % 2), &format!("c{i}"))).collect();
    let (api, admin, _) = serve(observer.clone()).await;
    components.iter().for_each(|c| c.metrics.http_request(200, Duration::from_millis(1)));
    let deadline = Instant::now() + Duration::from_secs(5);
    let (status, body) = loop {
        let (status, body) = api.get("/v1/metrics/series", Some(&admin)).await;
        if status != 200 || Instant::now() > deadline {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("101 components"), "{body}");
    // Named by app, each half fits.
    let (status, body) = api.get("/v1/metrics/series?app=app0", Some(&admin)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["series"].as_array().unwrap().len(), 51);
}
