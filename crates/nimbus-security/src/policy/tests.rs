use super::*;

fn token(id: &str, scopes: &[&str], apps: &[&str]) -> Principal {
    Principal::Token(TokenPrincipal {
        id: id.into(),
        role: "deployer".into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        apps: apps.iter().map(|s| s.to_string()).collect(),
        ..TokenPrincipal::default()
    })
}

fn app(name: &str) -> Resource {
    Resource::App(name.into())
}

#[test]
fn the_built_in_policies_give_each_scope_its_actions_on_the_apps_a_token_covers() {
    let p = Policies::new();
    let deployer = token("d", &["read", "deploy", "traffic"], &[]);
    for (action, allowed) in [
        (Action::Read, true),
        (Action::Deploy, true),
        (Action::Delete, true),
        (Action::Traffic, true),
        (Action::Rollback, true),
        (Action::Secrets, false),
        (Action::DataWrite, false),
    ] {
        assert_eq!(p.decide(&deployer, action, &app("shop")).allowed, allowed, "{action}");
    }
    assert!(!p.decide(&deployer, Action::Tokens, &Resource::Server).allowed);
    let limited = token("l", &["read", "deploy"], &["shop"]);
    assert!(p.decide(&limited, Action::Deploy, &app("shop")).allowed);
    assert!(!p.decide(&limited, Action::Deploy, &app("billing")).allowed);
    assert!(p.decide(&limited, Action::Read, &Resource::Server).allowed, "lists are filtered per app");
    // Administering the server needs the admin scope on a token for every app.
    assert!(p.decide(&token("a", &["admin"], &[]), Action::Tokens, &Resource::Server).allowed);
    assert!(!p.decide(&token("b", &["admin"], &["shop"]), Action::Tokens, &Resource::Server).allowed);
    // An action asked of what it does not apply to is denied, not an error to the caller.
    assert!(!p.decide(&token("a", &["admin"], &[]), Action::Kv, &app("shop")).allowed);
}

#[test]
fn a_forbid_overrides_every_permit_and_names_itself() {
    let p = Policies::new();
    let admin = token("root", &["read", "deploy", "admin"], &[]);
    assert!(p.decide(&admin, Action::Deploy, &app("payments")).allowed);
    p.set(
        r#"
        @id("freeze-payments")
        forbid (principal, action in [Nimbus::Action::"deploy", Nimbus::Action::"delete"], resource == Nimbus::App::"payments");
        @id("everyone-deploys")
        permit (principal, action == Nimbus::Action::"deploy", resource);
        "#,
    )
    .unwrap();
    let no = p.decide(&admin, Action::Deploy, &app("payments"));
    assert!(!no.allowed);
    assert_eq!(no.forbidden_by, ["freeze-payments"]);
    assert!(p.decide(&admin, Action::Deploy, &app("shop")).allowed);
    // A denial for want of a permit names no policy.
    assert!(p.decide(&token("v", &["read"], &[]), Action::Secrets, &app("shop")).forbidden_by.is_empty());
}

#[test]
fn groups_and_users_are_principals_too() {
    let p = Policies::new();
    let ops = Principal::Token(TokenPrincipal {
        id: "t1".into(),
        role: "viewer".into(),
        scopes: vec!["read".into()],
        user: Some("alice".into()),
        groups: vec!["ops".into()],
        ..TokenPrincipal::default()
    });
    assert!(!p.decide(&ops, Action::Rollback, &app("shop")).allowed);
    p.set(r#"permit (principal in Nimbus::Group::"ops", action == Nimbus::Action::"rollback", resource == Nimbus::App::"shop");
             forbid (principal in Nimbus::User::"alice", action, resource == Nimbus::App::"vault");"#)
        .unwrap();
    assert!(p.decide(&ops, Action::Rollback, &app("shop")).allowed, "a permit for the token's group");
    assert!(!p.decide(&ops, Action::Read, &app("vault")).allowed, "a forbid for the token's user");
}

#[test]
fn no_permit_lifts_a_tokens_app_limit_or_gives_administration_to_a_non_admin() {
    let p = Policies::new();
    p.set(r#"permit (principal in Nimbus::Group::"ops", action, resource);"#).unwrap();
    let limited = Principal::Token(TokenPrincipal {
        id: "l".into(),
        role: "deployer".into(),
        scopes: vec!["deploy".into()],
        apps: vec!["x".into()],
        groups: vec!["ops".into()],
        ..TokenPrincipal::default()
    });
    assert!(p.decide(&limited, Action::Deploy, &app("x")).allowed);
    assert!(!p.decide(&limited, Action::Rollback, &app("shop")).allowed, "another app, though ops may");
    assert!(!p.decide(&limited, Action::Tokens, &Resource::Server).allowed, "tokens need an admin for every app");
    let deployer = token("d", &["deploy"], &[]);
    let Principal::Token(mut in_ops) = deployer else { unreachable!() };
    in_ops.groups = vec!["ops".into()];
    assert!(!p.decide(&Principal::Token(in_ops), Action::Policies, &Resource::Server).allowed);
}

#[test]
fn an_admin_forbid_that_fails_to_evaluate_denies() {
    let p = Policies::new();
    // Overflows for every request: Cedar skips a policy that errs; a forbid must not be skipped.
    p.set(r#"@id("overflows") forbid (principal, action, resource) when { 9223372036854775807 + 1 > 0 };"#).unwrap();
    let d = p.decide(&token("a", &["read"], &[]), Action::Read, &app("shop"));
    assert!(!d.allowed);
    assert_eq!(d.forbidden_by, ["overflows"]);
    assert!(!d.errors.is_empty());
}

#[test]
fn decisions_about_long_names_are_not_cached() {
    let p = Policies::new();
    let t = token("c", &["read"], &[]);
    let long = app(&"x".repeat(10_000));
    assert!(p.decide(&t, Action::Read, &long).allowed);
    assert_eq!(p.active.load().cache.lock().unwrap().len(), 0);
    assert!(p.decide(&t, Action::Read, &app("shop")).allowed);
    assert_eq!(p.active.load().cache.lock().unwrap().len(), 1);
}

#[test]
fn setting_policies_drops_the_cached_decisions() {
    let p = Policies::new();
    let t = token("c", &["read"], &[]);
    assert!(p.decide(&t, Action::Read, &app("shop")).allowed);
    assert!(p.decide(&t, Action::Read, &app("shop")).allowed, "from the cache");
    p.set(r#"forbid (principal, action == Nimbus::Action::"read", resource == Nimbus::App::"shop");"#).unwrap();
    assert!(!p.decide(&t, Action::Read, &app("shop")).allowed);
    p.set("").unwrap();
    assert!(p.decide(&t, Action::Read, &app("shop")).allowed);
}

#[test]
fn policies_that_do_not_parse_or_do_not_match_the_schema_are_refused_and_change_nothing() {
    let p = Policies::new();
    p.set(r#"@id("keep") forbid (principal, action == Nimbus::Action::"delete", resource);"#).unwrap();
    let refused = [
        ("permit (principal, action, resource", "do not parse"),
        (r#"@id("typo") permit (principal, action == Nimbus::Action::"deploi", resource);"#, "does not match"),
        (
            r#"@id("attr") permit (principal is Nimbus::Token, action, resource) when { principal.team == "x" };"#,
            "does not match",
        ),
        (r#"@id("nimbus.mine") permit (principal, action, resource);"#, "built-in prefix"),
        (
            r#"@id("a") permit (principal, action, resource); @id("a") forbid (principal, action, resource);"#,
            "used twice",
        ),
        (r#"@id("t") permit (principal == ?principal, action, resource);"#, "template"),
    ];
    for (text, why) in refused {
        let e = p.set(text).unwrap_err().to_string();
        assert!(e.contains(why), "{text}: {e}");
        assert!(p.text().contains("keep"), "the policies in use stay");
    }
    let e =
        p.set(r#"@id("attr") permit (principal is Nimbus::Token, action, resource) when { principal.team == "x" };"#);
    assert!(matches!(e, Err(PolicyError::Invalid { ref id, .. }) if id == "attr"), "{e:?}");
}

#[test]
fn a_grant_is_linked_as_a_permit_and_an_admins_forbid_overrides_it() {
    let p = Policies::new();
    let bucket = Resource::Bucket { app: "shop".into(), name: "orders".into() };
    let origin = Resource::Origin("https://api.stripe.com".into());
    let grants = [(Action::Kv, bucket.clone()), (Action::Outbound, origin.clone())];
    assert!(p.check_grants("shop", "api", &grants).is_empty());
    // Without the grant, nothing permits it.
    assert!(!p.decide(&Principal::Component { app: "shop".into(), name: "api".into() }, Action::Kv, &bucket).allowed);
    p.set(
        r#"@id("no-orders-from-api")
        forbid (principal == Nimbus::Component::"shop/api", action == Nimbus::Action::"kv", resource in Nimbus::App::"shop")
        when { resource.name == "orders" };
        @id("no-stripe")
        forbid (principal, action == Nimbus::Action::"outbound", resource) when { resource.url like "*stripe*" };"#,
    )
    .unwrap();
    let denied = p.check_grants("shop", "api", &grants);
    let ids: Vec<_> = denied.iter().map(|(a, _, d)| (*a, d.forbidden_by.clone())).collect();
    assert_eq!(
        ids,
        [(Action::Kv, vec!["no-orders-from-api".to_string()]), (Action::Outbound, vec!["no-stripe".to_string()])]
    );
    assert!(p.check_grants("shop", "web", &[(Action::Kv, bucket)]).is_empty(), "another component keeps it");
}
