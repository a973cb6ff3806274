//! What a policy decision costs a control-API call, with a realistic set: the built-in
//! policies plus 60 an admin set (a forbid and a group permit per team, freezes of single apps,
//! conditions on attributes), for a token of a group, on one of 200 apps — evaluated each time
//! (`uncached`) and as the API takes it (`cached`, the same principal, action and resource
//! again); and checking a component's ten grants at load.
//! `cargo bench -p nimbus-security --bench policy`
#![allow(missing_docs, reason = "criterion_group! defines an undocumented public function")]
use criterion::{Criterion, criterion_group, criterion_main};
use nimbus_security::policy::{Action, Policies, Principal, Resource, TokenPrincipal};

/// 60 policies: for each of 20 teams a permit of its group on its app, a forbid of deletes on
/// its app for everyone outside the team's admins, and a freeze of one of its apps.
fn admin_policies() -> String {
    let mut text = String::new();
    for team in 0..20 {
        text.push_str(&format!(
            "@id(\"team{team}-deploys\")\npermit (principal in Nimbus::Group::\"team{team}\", action in [Nimbus::Action::\"deploy\", Nimbus::Action::\"traffic\", Nimbus::Action::\"rollback\"], resource == Nimbus::App::\"app{team}\");\n\
             @id(\"team{team}-no-deletes\")\nforbid (principal, action == Nimbus::Action::\"delete\", resource == Nimbus::App::\"app{team}\") unless {{ principal in Nimbus::Group::\"team{team}-admins\" }};\n\
             @id(\"team{team}-freeze\")\nforbid (principal is Nimbus::Token, action == Nimbus::Action::\"deploy\", resource == Nimbus::App::\"app{}\") when {{ principal.role != \"admin\" }};\n",
            100 + team
        ));
    }
    text
}

fn bench(c: &mut Criterion) {
    let policies = Policies::new();
    policies.set(&admin_policies()).expect("valid policies");
    let token = Principal::Token(TokenPrincipal {
        id: "t".into(),
        role: "deployer".into(),
        scopes: vec!["read".into(), "deploy".into(), "traffic".into()],
        user: Some("alice".into()),
        groups: vec!["team7".into()],
        ..TokenPrincipal::default()
    });
    let apps: Vec<Resource> = (0..200).map(|i| Resource::App(format!("app{i}"))).collect();
    let mut group = c.benchmark_group("policy");
    let mut i = 0;
    group.bench_function("decide_uncached", |b| {
        b.iter(|| {
            i = (i + 1) % apps.len();
            policies.decide_uncached(&token, Action::Deploy, &apps[i])
        })
    });
    group.bench_function("decide_cached", |b| {
        b.iter(|| {
            i = (i + 1) % apps.len();
            policies.decide(&token, Action::Deploy, &apps[i])
        })
    });
    let grants: Vec<(Action, Resource)> =
        (0..10).map(|i| (Action::Kv, Resource::Bucket { app: "app7".into(), name: format!("bucket{i}") })).collect();
    group.bench_function("check_ten_grants", |b| b.iter(|| policies.check_grants("app7", "api", &grants)));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
