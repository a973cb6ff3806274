//! `nimbus up` end to end: the real binary, real HTTP over loopback.
mod common;

use std::time::{Duration, Instant};

use common::{App, client, fixtures_manifest};

#[tokio::test]
async fn serves_components_and_wagi_modules_with_request_ids() {
    let app = App::new(&fixtures_manifest("timeout_ms = 5000", ""));
    let server = app.up(&[]);
    assert!(server.banner.contains("/kitchen/..."), "{}", server.banner);
    assert!(server.banner.contains("WAGI module"), "{}", server.banner);
    let c = client();

    let resp = c.get(server.url("/anything")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("x-request-id"));
    assert_eq!(resp.text().await.unwrap(), "Hello from Nimbus!\n");

    let resp = c
        .post(server.url("/kitchen/echo?q=1"))
        .header("x-request-id", "my-trace-42")
        .header("x-custom", "yes")
        .body("0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "my-trace-42", "a caller's id is kept");
    let body = resp.text().await.unwrap();
    assert!(body.contains("method=Method::Post"), "{body}");
    assert!(body.contains("path=/kitchen/echo?q=1"), "{body}");
    assert!(body.contains("x-custom: yes"), "{body}");
    assert!(body.contains("x-request-id: my-trace-42"), "the guest sees the request id: {body}");
    assert!(body.contains("body_len=10"), "{body}");

    let resp = c.post(server.url("/wagi/greet?name=x")).body("data").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.unwrap();
    assert!(body.contains("method=POST path=/greet query=name=x"), "{body}");
    let resp = c.put(server.url("/wagi/greet")).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "GET, POST");

    let resp = c.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "{\"status\":\"ok\"}\n");

    let resp = c.get(server.url("/kitchen/big?kb=2048")).send().await.unwrap();
    assert_eq!(resp.bytes().await.unwrap().len(), 2048 * 1024, "large bodies stream completely");
}

#[tokio::test]
async fn guest_output_is_logged_with_the_request_id() {
    let app = App::new(&fixtures_manifest("", ""));
    let server = app.up(&[]);
    let resp = client().get(server.url("/kitchen/log")).header("x-request-id", "log-check-1").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    server.wait_for_log("hello on stderr");
    let stdout_line = server.wait_for_line(|l| l.contains("hello on stdout"));
    assert!(stdout_line.contains("log-check-1") && stdout_line.contains("component=kitchen"), "{stdout_line}");
}

#[tokio::test]
async fn oversized_bodies_get_413_declared_or_streamed() {
    let app = App::new(&fixtures_manifest("max_body_kb = 1", ""));
    let server = app.up(&[]);
    let c = client();
    let resp = c.post(server.url("/kitchen/echo")).body(vec![b'a'; 2048]).send().await.unwrap();
    assert_eq!(resp.status(), 413);
    let json: serde_json::Value = resp.json().await.unwrap();
    assert!(json["request_id"].is_string());
    // Chunked, without a Content-Length: the limit applies while reading.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![Ok(vec![b'b'; 700]), Ok(vec![b'c'; 700])];
    let chunks = futures::stream::iter(chunks);
    let resp = c.post(server.url("/kitchen/echo")).body(reqwest::Body::wrap_stream(chunks)).send().await.unwrap();
    assert_eq!(resp.status(), 413);
    let resp = c.post(server.url("/kitchen/echo")).body(vec![b'a'; 1024]).send().await.unwrap();
    assert_eq!(resp.status(), 200, "exactly the limit is accepted");
}

#[tokio::test]
async fn misbehaving_guests_get_5xx_with_request_id_and_the_server_keeps_serving() {
    let app = App::new(&fixtures_manifest("timeout_ms = 500, memory_mb = 32", ""));
    let server = app.up(&[]);
    let c = client();

    // A looping guest, with healthy traffic alongside it.
    let looping = {
        let c = c.clone();
        let url = server.url("/kitchen/loop");
        tokio::spawn(async move {
            let started = Instant::now();
            let resp = c.get(url).header("x-request-id", "loop-1").send().await.unwrap();
            (
                resp.status().as_u16(),
                resp.headers()["x-request-id"].to_str().unwrap().to_string(),
                resp.text().await.unwrap(),
                started.elapsed(),
            )
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    for _ in 0..20 {
        let resp = c.get(server.url("/")).send().await.unwrap();
        assert_eq!(resp.status(), 200, "other requests are served while a guest loops");
    }
    let (status, id, body, elapsed) = looping.await.unwrap();
    assert_eq!(status, 504);
    assert_eq!(id, "loop-1");
    assert!(body.contains("\"request_id\":\"loop-1\""), "{body}");
    assert!(body.contains("timeout"), "{body}");
    assert!(elapsed < Duration::from_secs(10), "stopped near its 500 ms timeout, took {elapsed:?}");

    for (path, id, why) in [
        ("/kitchen/oom", "oom-1", "memory limit"),
        ("/kitchen/recurse", "rec-1", "stack overflow"),
        ("/kitchen/panic", "panic-1", "unreachable"),
        ("/kitchen/never", "never-1", "without sending a response"),
    ] {
        let resp = c.get(server.url(path)).header("x-request-id", id).send().await.unwrap();
        assert_eq!(resp.status(), 500, "{path}");
        assert_eq!(resp.headers()["x-request-id"], id);
        let json: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(json["request_id"], id);
        assert!(json["error"].as_str().unwrap().contains(why), "{path}: {json}");
        let line = server.wait_for_line(|l| l.contains(id) && l.contains("invocation failed"));
        assert!(line.contains(why), "the log says why: {line}");
    }
    server.wait_for_log("kitchen guest panicked on purpose");

    let resp = c.get(server.url("/wagi/loop")).send().await.unwrap();
    assert_eq!(resp.status(), 504, "WAGI modules are stopped too");
    let resp = c.get(server.url("/wagi/garbage")).send().await.unwrap();
    assert_eq!(resp.status(), 502);

    let resp = c.get(server.url("/kitchen/echo")).send().await.unwrap();
    assert_eq!(resp.status(), 200, "the component still serves after all of that");
}

#[tokio::test]
async fn ungranted_outbound_calls_are_refused_and_logged() {
    let app = App::new(&fixtures_manifest("", "grants = { outbound = [\"http://127.0.0.1:9\"] }"));
    let server = app.up(&[]);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let resp = client()
        .get(server.url(&format!("/kitchen/outbound?url=http://127.0.0.1:{port}/secret")))
        .header("x-request-id", "egress-1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    assert!(resp.text().await.unwrap().contains("HttpRequestDenied"));
    let line = server.wait_for_line(|l| l.contains("outbound request denied"));
    assert!(line.contains("egress-1") && line.contains("/secret"), "{line}");
    listener.set_nonblocking(true).unwrap();
    assert!(listener.accept().is_err(), "nothing reached the ungranted origin");
}

#[tokio::test]
async fn full_admission_queue_answers_503_with_retry_after() {
    let app = App::new(&fixtures_manifest("max_concurrency = 1, queue_depth = 1, queue_timeout_ms = 5000", ""));
    let server = app.up(&[]);
    let c = client();
    let mut calls = Vec::new();
    for _ in 0..4 {
        let c = c.clone();
        let url = server.url("/kitchen/sleep?ms=600");
        calls.push(tokio::spawn(async move {
            let resp = c.get(url).send().await.unwrap();
            (resp.status().as_u16(), resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string()))
        }));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut results = Vec::new();
    for call in calls {
        results.push(call.await.unwrap());
    }
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    let shed: Vec<_> = results.iter().filter(|(s, _)| *s == 503).collect();
    assert_eq!(ok, 2, "one running and one queued request complete: {results:?}");
    assert_eq!(shed.len(), 2, "the rest are shed: {results:?}");
    assert!(shed.iter().all(|(_, retry)| retry.as_deref() == Some("1")));
}

#[tokio::test]
async fn queue_timeout_sheds_waiting_requests() {
    let app = App::new(&fixtures_manifest("max_concurrency = 1, queue_depth = 10, queue_timeout_ms = 100", ""));
    let server = app.up(&[]);
    let c = client();
    let slow = tokio::spawn(c.get(server.url("/kitchen/sleep?ms=800")).send());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let resp = c.get(server.url("/kitchen/echo")).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.text().await.unwrap().contains("no instance freed up in time"));
    assert_eq!(slow.await.unwrap().unwrap().status(), 200);
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests() {
    let app = App::new(&fixtures_manifest("", ""));
    let mut server = app.up(&[]);
    let c = client();
    let in_flight = tokio::spawn(c.get(server.url("/kitchen/sleep?ms=1000")).send());
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.signal("TERM");
    let resp = in_flight.await.unwrap().unwrap();
    assert_eq!(resp.status(), 200, "the in-flight request finishes");
    assert_eq!(resp.text().await.unwrap(), "slept 1000ms\n");
    assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(c.get(server.url("/")).send().await.is_err(), "no longer accepting");
    assert!(server.stderr().contains("received SIGTERM"));
}

#[tokio::test]
async fn sigint_stops_an_idle_server() {
    let app = App::new(&fixtures_manifest("", ""));
    let mut server = app.up(&[]);
    server.signal("INT");
    assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(server.stdout().contains("Stopped."));
}

#[tokio::test]
async fn restart_uses_the_compile_cache() {
    let app = App::new(&fixtures_manifest("", ""));
    let first = app.up(&[]);
    assert!(first.banner.contains("compiled in"), "{}", first.banner);
    drop(first);
    let second = app.up(&[]);
    assert_eq!(second.banner.matches("loaded from cache").count(), 3, "{}", second.banner);
    assert_eq!(client().get(second.url("/")).send().await.unwrap().status(), 200);
    drop(second);
    let third = app.up(&["--no-cache"]);
    assert!(!third.banner.contains("loaded from cache"), "{}", third.banner);
}

#[tokio::test]
async fn queued_requests_get_instances_as_soon_as_slots_free() {
    // Streaming responses hand their instance back only when the guest is done; queued requests
    // must then find a free instance, never an exhausted pool.
    let app = App::new(&fixtures_manifest("max_concurrency = 2, queue_depth = 100", ""));
    let server = app.up(&[]);
    let c = client();
    let calls: Vec<_> = (0..40)
        .map(|i| {
            let c = c.clone();
            let url = server.url(if i % 2 == 0 { "/kitchen/big?kb=512" } else { "/kitchen/echo" });
            tokio::spawn(async move {
                let resp = c.get(url).send().await.unwrap();
                let status = resp.status().as_u16();
                let _ = resp.bytes().await.unwrap();
                status
            })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), 200);
    }
}

#[tokio::test]
async fn http2_and_json_logs() {
    let app = App::new(&fixtures_manifest("", ""));
    let server = app.up(&["--log-format", "json"]);
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let resp = h2.get(server.url("/kitchen/log")).header("x-request-id", "h2-json-1").send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let line = server.wait_for_line(|l| l.contains("hello on stdout"));
    let json: serde_json::Value = serde_json::from_str(&line).expect(&line);
    assert_eq!(json["request_id"], "h2-json-1");
    assert_eq!(json["component"], "kitchen");
    assert_eq!(json["stream"], "stdout");
    assert_eq!(json["message"], "hello on stdout");
}

#[tokio::test]
async fn silent_slow_and_idle_clients_are_cut_off_after_the_idle_timeout() {
    let app = App::new(&fixtures_manifest("", ""));
    let server = app.up(&["--idle-timeout", "300ms"]);
    // Nothing at all, half of a request's headers, part of the HTTP/2 preface, a whole request
    // then nothing: each connection is closed instead of being held open.
    let whole = b"GET /anything HTTP/1.1\r\nHost: x\r\n\r\n";
    for sent in [&b""[..], b"GET /anything HTTP/1.1\r\nHost: x\r\n", b"PRI * HTTP/2", whole] {
        let answer = common::send_raw(&server.base, sent).await;
        let served = sent == whole;
        assert_eq!(answer.starts_with("HTTP/1.1 200"), served, "{sent:?} got {answer}");
        assert_eq!(answer.is_empty(), !served, "{sent:?} got {answer}");
    }
    // A request that takes longer than the timeout is not cut, neither while it is handled nor
    // while its response streams (for ~1.4 s).
    let c = client();
    let slow = c.get(server.url("/kitchen/sleep?ms=1000")).send().await.unwrap();
    assert_eq!(slow.text().await.unwrap(), "slept 1000ms\n");
    let streamed = c.get(server.url("/kitchen/drip?chunks=10&ms=150")).send().await.unwrap();
    assert_eq!(streamed.text().await.unwrap().lines().count(), 10);
    // HTTP/2 connections are served as well.
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    assert_eq!(h2.get(server.url("/anything")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_function_request_whose_body_stalls_gets_408_within_the_time_limit() {
    let app = App::new(&fixtures_manifest("timeout_ms = 500", ""));
    let server = app.up(&[]);
    let answer = common::stalled_post(&server.base, "/kitchen/echo").await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("did not arrive within 500ms"), "{answer}");
    // A body that arrives in time is served.
    let resp = client().post(server.url("/kitchen/echo")).body("hello").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("body_len=5"));
}

#[tokio::test]
async fn the_local_api_cuts_stalled_clients_and_refuses_web_pages() {
    let app = App::new(&fixtures_manifest("", ""));
    let server = app.up(&["--idle-timeout", "300ms"]);
    let api: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(app.path().join(".nimbus/api.json")).unwrap()).unwrap();
    let (url, token) = (api["url"].as_str().unwrap(), api["token"].as_str().unwrap());
    // Part of a request line: the connection is closed unanswered after the idle timeout.
    assert_eq!(common::send_raw(url, b"GET /metrics HT").await, "");
    // Even with the token, a DNS-rebinding page (its own host name) or another origin (the app's
    // own pages on the gateway) is refused.
    let port = url.rsplit(':').next().unwrap();
    let get = |extra: Option<(&'static str, String)>| {
        let mut req = client().get(format!("{url}/metrics")).bearer_auth(token);
        if let Some((k, v)) = extra {
            req = req.header(k, v);
        }
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(get(None).await, 200);
    assert_eq!(get(Some(("host", format!("evil.example:{port}")))).await, 403);
    assert_eq!(get(Some(("origin", server.base.clone()))).await, 403);
}

#[test]
fn the_apps_data_is_closed_to_other_users() {
    use std::os::unix::fs::PermissionsExt;
    let app = App::new(&fixtures_manifest("timeout_ms = 5000", ""));
    let data = app.path().join(".nimbus");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let _server = app.up(&[]);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o711, "the data dir may only be passed through");
    let entries: Vec<_> = std::fs::read_dir(&data).unwrap().flatten().collect();
    assert!(!entries.is_empty());
    for entry in entries {
        let (path, kind) = (entry.path(), entry.file_type().unwrap());
        let expected = match path.file_name().and_then(|n| n.to_str()) {
            Some("identity") => 0o711,
            Some("services") => 0o755,
            _ if kind.is_dir() => 0o700,
            _ => 0o600,
        };
        assert_eq!(mode(&path), expected, "{}", path.display());
    }
}
