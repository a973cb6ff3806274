//! `nimbus policy`: the Cedar policies a server decides with — list them, set them from a file,
//! print the schema they are validated against, and run policy tests (requests and the decision
//! each must get) from a file, against a server's policies or a local file, as CI can.
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Subcommand;
use nimbus_control::{PolicyText, Role};
use nimbus_security::policy::{Action, Decision, Policies, Principal, Resource, TokenPrincipal};
use reqwest::Method;
use serde::Deserialize;

use crate::remote::{Client, RemoteArgs};

#[derive(Debug, Subcommand)]
pub(crate) enum PolicyCommand {
    /// Print the policies an admin set (`--builtin`: the built-in ones every server has).
    List {
        /// The built-in policies and grant templates instead.
        #[arg(long)]
        builtin: bool,
    },
    /// Replace the policies with the ones in FILE (`-`: stdin); each is validated first.
    Set {
        /// A file of Cedar policies.
        file: PathBuf,
    },
    /// Print the schema every policy is validated against.
    Schema,
    /// Run the policy tests in FILE against the server's policies (or `--policies FILE`,
    /// offline); fails when a decision differs from the expected one.
    Test {
        /// A TOML file of `[[case]]`s: `principal`, `action`, `resource`, `expect`.
        file: PathBuf,
        /// Test these policies (a Cedar file) instead of the server's.
        #[arg(long, value_name = "FILE")]
        policies: Option<PathBuf>,
    },
}

pub(crate) fn run(remote: &RemoteArgs, command: &PolicyCommand) -> anyhow::Result<()> {
    match command {
        PolicyCommand::List { builtin: true } => {
            print!("{}", Policies::builtin_text());
            Ok(())
        }
        PolicyCommand::List { builtin: false } => {
            let text: PolicyText = Client::new(remote)?.get("/v1/policies")?;
            if text.policies.trim().is_empty() {
                eprintln!("No policies set; only the built-in ones apply (`nimbus policy list --builtin`).");
            }
            print!("{}", text.policies);
            Ok(())
        }
        PolicyCommand::Set { file } => {
            let policies = read(file)?;
            let client = Client::new(remote)?;
            let _: PolicyText = client.send(Method::PUT, "/v1/policies", &PolicyText { policies })?;
            println!("Policies set from {}.", file.display());
            Ok(())
        }
        PolicyCommand::Schema => {
            print!("{}", Policies::schema_text());
            Ok(())
        }
        PolicyCommand::Test { file, policies } => {
            let text = match policies {
                Some(path) => read(path)?,
                None => Client::new(remote)?.get::<PolicyText>("/v1/policies")?.policies,
            };
            let engine = Policies::new();
            engine.set(&text).context("the policies under test are refused")?;
            let cases: Cases = toml::from_str(&read(file)?)
                .with_context(|| format!("{} is not a policy test file", file.display()))?;
            test(&engine, &cases.case)
        }
    }
}

/// Runs `cases`; an error when any fails.
fn test(engine: &Policies, cases: &[Case]) -> anyhow::Result<()> {
    let mut failed = 0;
    for case in cases {
        let (principal, action, resource) = case.request().with_context(|| format!("case `{}`", case.name))?;
        let decision = if case.granted {
            let Principal::Component { app, name } = &principal else {
                bail!("case `{}`: `granted` is for a component's requests", case.name);
            };
            let denied = engine.check_grants(app, name, &[(action, resource.clone())]);
            denied.into_iter().next().map_or(Decision { allowed: true, forbidden_by: vec![], errors: vec![] }, |d| d.2)
        } else {
            engine.decide_uncached(&principal, action, &resource)
        };
        let got = if decision.allowed { Expect::Allow } else { Expect::Deny };
        if got == case.expect {
            println!("ok      {}", case.name);
        } else {
            failed += 1;
            let by = if decision.forbidden_by.is_empty() {
                String::new()
            } else {
                format!(" (forbidden by {})", decision.forbidden_by.join(", "))
            };
            println!("FAILED  {}: expected {:?}, got {got:?}{by}", case.name, case.expect);
        }
    }
    println!("{} passed, {failed} failed", cases.len() - failed);
    if failed > 0 {
        bail!("{failed} policy test(s) failed");
    }
    Ok(())
}

fn read(path: &Path) -> anyhow::Result<String> {
    if path == Path::new("-") {
        return std::io::read_to_string(std::io::stdin()).context("cannot read stdin");
    }
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// A policy test file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Cases {
    case: Vec<Case>,
}

/// One request and the decision it must get.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    principal: CasePrincipal,
    action: String,
    resource: CaseResource,
    expect: Expect,
    /// For a component: its manifest grants it this (the grant is linked as a permit).
    #[serde(default)]
    granted: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Expect {
    Allow,
    Deny,
}

/// `{ token = "ID", role = "deployer", apps = [...], scopes = [...], user = "...", groups = [...] }`
/// or `{ component = "APP/NAME" }`.
#[derive(Debug, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
enum CasePrincipal {
    Token {
        token: String,
        role: Role,
        #[serde(default)]
        apps: Vec<String>,
        #[serde(default)]
        scopes: Option<Vec<nimbus_control::Scope>>,
        #[serde(default)]
        user: Option<String>,
        #[serde(default)]
        groups: Vec<String>,
    },
    Component {
        component: String,
    },
}

/// One of `{ server = true }`, `{ app = "shop" }`, `{ bucket = "shop/orders" }`, `{ topic = ... }`,
/// `{ actor = ... }`, `{ secret = ... }`, `{ origin = "https://..." }`, `{ component = ... }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseResource {
    server: Option<bool>,
    app: Option<String>,
    bucket: Option<String>,
    topic: Option<String>,
    actor: Option<String>,
    secret: Option<String>,
    origin: Option<String>,
    component: Option<String>,
}

impl Case {
    fn request(&self) -> anyhow::Result<(Principal, Action, Resource)> {
        let principal = match &self.principal {
            CasePrincipal::Token { token, role, apps, scopes, user, groups } => {
                let scopes = scopes.as_deref().unwrap_or(role.scopes());
                if let Some(s) = scopes.iter().find(|s| !role.scopes().contains(s)) {
                    bail!("a {role} token cannot hold scope `{s}`");
                }
                Principal::Token(TokenPrincipal {
                    id: token.clone(),
                    role: role.to_string(),
                    scopes: scopes.iter().map(|s| s.name().to_string()).collect(),
                    apps: apps.clone(),
                    user: user.clone(),
                    groups: groups.clone(),
                })
            }
            CasePrincipal::Component { component } => {
                let (app, name) = owned(component)?;
                Principal::Component { app, name }
            }
        };
        let action: Action = self.action.parse().map_err(anyhow::Error::msg)?;
        let r = &self.resource;
        let named = [&r.bucket, &r.topic, &r.actor, &r.secret, &r.component];
        let given = usize::from(r.server == Some(true))
            + usize::from(r.app.is_some())
            + usize::from(r.origin.is_some())
            + named.iter().filter(|n| n.is_some()).count();
        if given != 1 {
            bail!("name exactly one resource: server, app, bucket, topic, actor, secret, origin or component");
        }
        let resource = if r.server == Some(true) {
            Resource::Server
        } else if let Some(app) = &r.app {
            Resource::App(app.clone())
        } else if let Some(url) = &r.origin {
            Resource::Origin(url.clone())
        } else if let Some(b) = &r.bucket {
            let (app, name) = owned(b)?;
            Resource::Bucket { app, name }
        } else if let Some(t) = &r.topic {
            let (app, name) = owned(t)?;
            Resource::Topic { app, name }
        } else if let Some(a) = &r.actor {
            let (app, name) = owned(a)?;
            Resource::ActorType { app, name }
        } else if let Some(s) = &r.secret {
            let (app, name) = owned(s)?;
            Resource::Secret { app, name }
        } else {
            let (app, name) = owned(r.component.as_deref().unwrap_or_default())?;
            Resource::Component { app, name }
        };
        Ok((principal, action, resource))
    }
}

/// `APP/NAME`.
fn owned(named: &str) -> anyhow::Result<(String, String)> {
    named
        .split_once('/')
        .filter(|(a, n)| !a.is_empty() && !n.is_empty())
        .map(|(a, n)| (a.to_string(), n.to_string()))
        .with_context(|| format!("`{named}` is not `APP/NAME`"))
}
