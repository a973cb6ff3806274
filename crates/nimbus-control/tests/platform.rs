//! Deploys, traffic, rollback, deletion, restarts and ownership through `Platform`'s public API,
//! in-process: a real control store, real wasm components, and requests served by the gateway's
//! `Ingress` on a loopback port, so each test asserts what a client gets. (`tests/server.rs` at
//! the workspace root covers the same ground through the `nimbus` binary, its CLI and its API.)
mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{Data, Server, hello, hello_manifest, ids, on_hosts, promoted, tagged, traffic, with_web};
use http::StatusCode;
use nimbus_control::{ControlError, DeployOptions, Role};

const ANY: &str = "any.test";

#[tokio::test(flavor = "multi_thread")]
async fn the_first_deploy_takes_all_traffic_and_later_ones_only_when_promoted() {
    let data = Data::new();
    let s = Server::open(&data).await;
    let first = s.deploy(hello("shop", "/shop/...", "a"), DeployOptions::default()).await.unwrap();
    assert!(first.created);
    assert_eq!(first.traffic, traffic(&[(&first.revision, 100)], &[]));
    let a = first.revision;
    assert_eq!(s.served_by(ANY, "/shop/cart", None).await, a);
    assert_eq!(s.get("/elsewhere", &[]).await.0, 404, "only the app's routes are served");

    let second = s.deploy(hello("shop", "/shop/...", "b"), DeployOptions::default()).await.unwrap();
    assert!(second.created);
    let b = second.revision;
    assert_ne!(a, b);
    assert_eq!(second.traffic, traffic(&[(&a, 100)], &[]), "a deploy without promote moves no traffic");
    for _ in 0..20 {
        assert_eq!(s.served_by(ANY, "/shop/cart", None).await, a);
    }
    let revisions = s.platform.revisions("shop").await.unwrap();
    let percents: BTreeMap<&str, u8> = revisions.iter().map(|r| (r.id.as_str(), r.percent)).collect();
    assert_eq!(percents, [(&*a, 100), (&*b, 0)].into());

    let c = s.deploy_promoted(hello("shop", "/shop/...", "c")).await;
    assert_eq!(s.platform.app("shop").await.unwrap().traffic, traffic(&[(&c, 100)], &[]));
    for _ in 0..20 {
        assert_eq!(s.served_by(ANY, "/shop/cart", None).await, c);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn redeploying_identical_content_is_the_same_revision() {
    let data = Data::new();
    let s = Server::open(&data).await;
    let a = s.deploy_new(hello("shop", "/...", "a")).await;
    let b = s.deploy_new(hello("shop", "/...", "b")).await;
    let before = s.snapshot("shop").await;

    let again = s.deploy(hello("shop", "/...", "b"), DeployOptions::default()).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.revision, b);
    assert_eq!(s.snapshot("shop").await, before, "nothing new is stored");
    assert_eq!(s.revision_ids("shop").await, ids([&b, &a]));

    // Promoting the known content moves traffic to it without creating anything.
    let again = s.deploy(hello("shop", "/...", "b"), promoted()).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.traffic, traffic(&[(&b, 100)], &[]));
    assert_eq!(s.served_by(ANY, "/", None).await, b);
    assert_eq!(s.revision_ids("shop").await, ids([&b, &a]));
}

#[tokio::test(flavor = "multi_thread")]
async fn traffic_splits_and_tags_route_and_invalid_splits_change_nothing() {
    let data = Data::new();
    let s = Server::open(&data).await;
    let a = s.deploy(hello("shop", "/...", "a"), on_hosts(&["shop.test"])).await.unwrap().revision;
    let b = s.deploy_new(hello("shop", "/...", "b")).await;

    let split = traffic(&[(&a, 50), (&b, 50)], &[("canary", &b)]);
    assert_eq!(s.platform.set_traffic("shop", split.clone()).await.unwrap(), split);
    let mut seen = BTreeSet::new();
    // Each request picks a revision at random: both answer within 200 requests unless one never does.
    for _ in 0..200 {
        seen.insert(s.served_by("shop.test", "/", None).await);
    }
    assert_eq!(seen, [a.clone(), b.clone()].into());
    for _ in 0..20 {
        assert_eq!(s.served_by("shop.test", "/", Some("canary")).await, b, "the tag header");
        assert_eq!(s.served_by("canary.shop.test", "/", None).await, b, "the TAG.HOST host");
    }
    assert_eq!(s.get("/", &[("host", "shop.test"), ("x-nimbus-tag", "nope")]).await.0, 404, "an unknown tag");
    assert_eq!(s.get("/", &[("host", "other.test")]).await.0, 404, "the app is bound to shop.test");

    let before = s.snapshot("shop").await;
    let refused = [
        (traffic(&[(&a, 50), (&b, 40)], &[]), StatusCode::BAD_REQUEST, "add up to 90"),
        (traffic(&[(&a, 60), (&b, 60)], &[]), StatusCode::BAD_REQUEST, "add up to 120"),
        (traffic(&[], &[]), StatusCode::BAD_REQUEST, "at least one revision"),
        (traffic(&[(&a, 50), (&a, 50)], &[]), StatusCode::BAD_REQUEST, "listed twice"),
        (traffic(&[(&a, 50), ("0123456789ab", 50)], &[]), StatusCode::NOT_FOUND, "no revision `0123456789ab`"),
        (traffic(&[(&a, 100)], &[("canary", "0123456789ab")]), StatusCode::NOT_FOUND, "no revision `0123456789ab`"),
        (traffic(&[(&a, 100)], &[("Not A Label", &b)]), StatusCode::BAD_REQUEST, "invalid tag"),
    ];
    for (split, status, says) in refused {
        let e = s.platform.set_traffic("shop", split.clone()).await.unwrap_err();
        assert_eq!(e.status(), status, "{split:?}: {e}");
        match status {
            StatusCode::NOT_FOUND => assert!(matches!(e, ControlError::NotFound(_)), "{e:?}"),
            _ => assert!(matches!(e, ControlError::BadRequest { .. }), "{e:?}"),
        }
        assert!(e.to_string().contains(says), "{split:?}: {e}");
        let body = e.body();
        let code = if status == StatusCode::NOT_FOUND { "not_found" } else { "bad_request" };
        assert_eq!((body.code.as_str(), body.status), (code, status.as_u16()), "{split:?}");
        assert!(body.hint.is_some_and(|h| !h.is_empty()), "{split:?}: every error says what to do");
        assert_eq!(s.snapshot("shop").await, before, "{split:?} changed something");
    }
    let e = s.platform.set_traffic("nope", traffic(&[(&a, 100)], &[])).await.unwrap_err();
    assert!(matches!(e, ControlError::NotFound(_)), "{e:?}");
    assert_eq!(s.served_by("canary.shop.test", "/", None).await, b, "the tag still routes");
}

#[tokio::test(flavor = "multi_thread")]
async fn rollback_restores_the_previous_traffic_or_sends_all_to_a_named_revision() {
    let data = Data::new();
    let s = Server::open(&data).await;
    let a = s.deploy_new(hello("shop", "/...", "a")).await;
    let e = s.platform.rollback("shop", None).await.unwrap_err();
    assert!(matches!(e, ControlError::Conflict { .. }), "{e:?}");
    assert_eq!(e.status(), StatusCode::CONFLICT);
    assert!(e.to_string().contains("no earlier traffic setting"), "{e}");
    assert_eq!(s.served_by(ANY, "/", None).await, a);

    let b = s.deploy_promoted(hello("shop", "/...", "b")).await;
    let c = s.deploy_new(hello("shop", "/...", "c")).await;
    assert_eq!(s.served_by(ANY, "/", None).await, b);
    assert_eq!(s.platform.rollback("shop", None).await.unwrap(), traffic(&[(&a, 100)], &[]));
    for _ in 0..20 {
        assert_eq!(s.served_by(ANY, "/", None).await, a, "back on the revision before the promote");
    }

    assert_eq!(s.platform.rollback("shop", Some(&c)).await.unwrap(), traffic(&[(&c, 100)], &[]));
    assert_eq!(s.served_by(ANY, "/", None).await, c, "a revision that never had traffic is loaded and served");
    let e = s.platform.rollback("shop", Some("0123456789ab")).await.unwrap_err();
    assert!(matches!(e, ControlError::NotFound(_)), "{e:?}");
    assert_eq!(s.platform.app("shop").await.unwrap().traffic, traffic(&[(&c, 100)], &[]));
    assert_eq!(s.served_by(ANY, "/", None).await, c);
}

#[tokio::test(flavor = "multi_thread")]
async fn revisions_with_traffic_or_a_tag_are_not_deleted_and_deleted_apps_stop_serving() {
    let data = Data::new();
    let s = Server::open(&data).await;
    let a = s.deploy_new(hello("shop", "/shop/...", "a")).await;
    let b = s.deploy(hello("shop", "/shop/...", "b"), tagged("canary")).await.unwrap().revision;
    let c = s.deploy_new(hello("shop", "/shop/...", "c")).await;
    let other = s.deploy_new(hello("other", "/other", "o")).await;

    let before = s.snapshot("shop").await;
    for (id, says) in [(&a, "receives traffic (100%, tags [])"), (&b, "(0%, tags [canary])")] {
        let e = s.platform.delete_revision("shop", id).await.unwrap_err();
        assert!(matches!(e, ControlError::Conflict { .. }), "{e:?}");
        assert_eq!(e.status(), StatusCode::CONFLICT);
        assert!(e.to_string().contains(says), "{e}");
        assert_eq!(s.snapshot("shop").await, before);
    }
    assert_eq!(s.served_by(ANY, "/shop/x", Some("canary")).await, b);

    s.platform.delete_revision("shop", &c).await.unwrap();
    assert_eq!(s.revision_ids("shop").await, ids([&b, &a]));
    assert!(!s.store.revisions().unwrap().iter().any(|r| r.id == c), "deleted from the store");
    let e = s.platform.revision("shop", &c).await.unwrap_err();
    assert!(matches!(e, ControlError::NotFound(_)), "{e:?}");
    assert_eq!(s.served_by(ANY, "/shop/x", None).await, a);

    s.platform.delete_app("shop").await.unwrap();
    assert_eq!(s.get("/shop/x", &[]).await.0, 404, "its routes are gone at once");
    assert_eq!(s.get("/shop/x", &[("x-nimbus-tag", "canary")]).await.0, 404);
    assert_eq!(s.app_names().await, ["other"]);
    assert!(s.store.revisions().unwrap().iter().all(|r| r.app == "other"));
    assert_eq!(s.served_by(ANY, "/other", None).await, other, "other apps keep serving");
    let e = s.platform.delete_app("shop").await.unwrap_err();
    assert!(matches!(e, ControlError::NotFound(_)), "{e:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn apps_revisions_and_traffic_come_back_after_a_restart() {
    let data = Data::new();
    let s = Server::open(&data).await;
    let a = s.deploy(hello("shop", "/...", "a"), on_hosts(&["shop.test"])).await.unwrap().revision;
    let b = s.deploy_new(hello("shop", "/...", "b")).await;
    let c = s.deploy_new(hello("shop", "/...", "c")).await;
    s.platform.set_traffic("shop", traffic(&[(&a, 50), (&b, 50)], &[("canary", &c)])).await.unwrap();
    let before = s.snapshot("shop").await;
    s.stop().await;

    let s = Server::open(&data).await;
    assert_eq!(s.snapshot("shop").await, before);
    let revisions = s.platform.revisions("shop").await.unwrap();
    assert!(revisions.iter().all(|r| r.loaded), "each has traffic or a tag, so each is loaded");
    let mut seen = BTreeSet::new();
    for _ in 0..200 {
        seen.insert(s.served_by("shop.test", "/", None).await);
    }
    assert_eq!(seen, [a.clone(), b.clone()].into());
    assert_eq!(s.served_by("canary.shop.test", "/", None).await, c);
    // The traffic history came back too: rollback undoes the split.
    assert_eq!(s.platform.rollback("shop", None).await.unwrap(), traffic(&[(&a, 100)], &[]));
    assert_eq!(s.served_by("shop.test", "/", None).await, a);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_route_another_app_serves_is_refused_unless_an_admin_takes_it_over() {
    let data = Data::new();
    let s = Server::open(&data).await;
    let a = s.deploy_new(hello("a", "/shop/...", "a")).await;
    let before = s.snapshot("b").await;

    let e = s.deploy(hello("b", "/shop/cart", "b"), DeployOptions::default()).await.unwrap_err();
    assert!(matches!(e, ControlError::Conflict { .. }), "{e:?}");
    assert_eq!(e.status(), StatusCode::CONFLICT);
    assert!(e.to_string().contains("requests app `a` serves"), "{e}");
    assert_eq!(s.app_names().await, ["a"]);
    assert_eq!(s.snapshot("b").await, before, "nothing of app b is stored");
    assert_eq!(s.served_by(ANY, "/shop/cart", None).await, a);

    // Only an admin over every app may take over.
    let take_over = DeployOptions { take_over: true, ..Default::default() };
    for principal in [s.principal(Role::Deployer, &[]), s.principal(Role::Admin, &["b"])] {
        let e = s.platform.deploy(hello("b", "/shop/cart", "b"), take_over.clone(), &principal).await.unwrap_err();
        assert!(matches!(e, ControlError::Forbidden(_)), "{e:?}");
        assert_eq!(s.snapshot("b").await, before);
    }

    let b = s.deploy(hello("b", "/shop/cart", "b"), take_over).await.unwrap().revision;
    assert_eq!(s.served_by(ANY, "/shop/cart", None).await, b);
    assert_eq!(s.served_by(ANY, "/shop/shoes", None).await, a, "app a keeps the rest of its routes");
    assert_eq!(s.app_names().await, ["a", "b"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_another_app_is_bound_to_moves_only_by_take_over() {
    let data = Data::new();
    let s = Server::open(&data).await;
    let a = s.deploy(hello("a", "/...", "a"), on_hosts(&["a.test", "shop.test"])).await.unwrap().revision;
    let before = s.snapshot("b").await;

    let to_shop = on_hosts(&["shop.test"]);
    let e = s.deploy(hello("b", "/...", "b"), to_shop.clone()).await.unwrap_err();
    assert!(matches!(e, ControlError::Conflict { .. }), "{e:?}");
    assert!(e.to_string().contains("host `shop.test` belongs to app `a`"), "{e}");
    assert_eq!(s.snapshot("b").await, before);
    assert_eq!(s.served_by("shop.test", "/", None).await, a);

    let b = s.deploy(hello("b", "/...", "b"), DeployOptions { take_over: true, ..to_shop }).await.unwrap().revision;
    assert_eq!(s.served_by("shop.test", "/", None).await, b);
    assert_eq!(s.served_by("a.test", "/", None).await, a);
    assert_eq!(s.platform.app("a").await.unwrap().hosts, ["a.test"]);
    let stored_a = s.store.apps().unwrap().into_iter().find(|r| r.name == "a").unwrap();
    assert_eq!(stored_a.hosts, ["a.test"], "the move is stored");
}

#[tokio::test(flavor = "multi_thread")]
async fn bundles_with_an_invalid_manifest_or_a_component_that_does_not_load_store_nothing() {
    let data = Data::new();
    let s = Server::open(&data).await;
    let a = s.deploy_new(hello("shop", "/...", "a")).await;
    let (before_shop, before_new) = (s.snapshot("shop").await, s.snapshot("new").await);
    let hello_wasm = std::fs::read(nimbus_fixtures::HELLO).unwrap();
    let not_wasm = std::fs::read(nimbus_fixtures::NOT_WASM).unwrap();
    let unknown_component = hello_manifest("shop", "/...", "b").replace("component = \"web\"", "component = \"nope\"");

    let refused = [
        (with_web("[app\nname = ".into(), hello_wasm.clone()), "the manifest is invalid"),
        (with_web(unknown_component, hello_wasm.clone()), "the manifest is invalid"),
        (with_web(hello_manifest("shop", "/...", "b").replace("web", "api"), hello_wasm), "does not match"),
        (with_web(hello_manifest("shop", "/...", "b"), not_wasm.clone()), "a component does not load"),
        (with_web(hello_manifest("new", "/new", "b"), not_wasm.clone()), "a component does not load"),
    ];
    for (bundle, says) in refused {
        let e = s.deploy(bundle.clone(), promoted()).await.unwrap_err();
        assert!(matches!(e, ControlError::Invalid { .. }), "{e:?}");
        assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(e.to_string().contains(says), "{}: {e}", bundle.manifest);
        assert_eq!(s.app_names().await, ["shop"]);
        assert_eq!(s.snapshot("shop").await, before_shop);
        assert_eq!(s.snapshot("new").await, before_new);
    }
    let not_wasm = nimbus_control::digest(&not_wasm);
    assert_eq!(s.store.blob(&not_wasm, &[]).unwrap(), None, "the artifact is not stored");
    assert_eq!(s.served_by(ANY, "/", None).await, a);
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_keeps_the_newest_revisions_without_traffic() {
    let data = Data::new();
    let s = Server::open(&data).await;
    let a = s.deploy_new(hello("shop", "/...", "a")).await;
    let b = s.deploy_new(hello("shop", "/...", "b")).await;
    let c = s.deploy_new(hello("shop", "/...", "c")).await;
    let d = s.deploy(hello("shop", "/...", "d"), tagged("canary")).await.unwrap().revision;

    s.platform.set_retention(1).await.unwrap();
    assert_eq!(s.revision_ids("shop").await, ids([&d, &c, &a]), "b is the older of b and c");
    let stored: Vec<String> = s.store.revisions().unwrap().into_iter().map(|r| r.id).collect();
    assert!(!stored.contains(&b) && stored.len() == 3, "{stored:?}");

    // After every deploy too: the new revision is kept, the one it displaces goes.
    let e = s.deploy_new(hello("shop", "/...", "e")).await;
    assert_eq!(s.revision_ids("shop").await, ids([&e, &d, &a]));
    assert_eq!(s.served_by(ANY, "/", None).await, a);
    assert_eq!(s.served_by(ANY, "/", Some("canary")).await, d);
}

#[test]
fn a_store_failure_answers_500_with_its_cause_and_a_stable_code() {
    let dir = tempfile::tempdir().unwrap();
    // A directory where the store's file should be.
    let e = ControlError::from(nimbus_control::Store::open(dir.path()).unwrap_err());
    let os_error = std::error::Error::source(&e).and_then(std::error::Error::source).expect("the OS error is kept");
    let body = e.body();
    assert_eq!((body.code.as_str(), body.status), ("store_failed", 500));
    let opening = format!("cannot open the control store {}", dir.path().display());
    assert!(body.error.contains(&opening) && body.error.ends_with(&os_error.to_string()), "{}", body.error);
    assert!(body.hint.is_some_and(|h| h.contains("free space")));
}
