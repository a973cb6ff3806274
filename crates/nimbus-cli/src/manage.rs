//! The commands that read and change what a server runs: `apps`, `revisions`, `traffic`,
//! `rollback`, `tokens` and `login`.
use std::collections::BTreeMap;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use nimbus_control::{
    AppInfo, CreatedToken, NewToken, RevisionDetail, RevisionInfo, Role, RollbackRequest, Scope, TokenInfo, Traffic,
    TrafficTarget, Whoami,
};
use reqwest::Method;

use crate::remote::{Client, Config, OutputArgs, RemoteArgs, seg, time};

#[derive(Debug, Subcommand)]
pub(crate) enum AppsCommand {
    /// List the apps.
    List(OutputArgs),
    /// Show one app.
    Show {
        app: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Delete an app and all its revisions; its routes stop being served.
    Delete { app: String },
}

#[derive(Debug, Subcommand)]
pub(crate) enum RevisionsCommand {
    /// List an app's revisions, newest first.
    List {
        app: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Show one revision with its manifest.
    Show {
        app: String,
        revision: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Delete a revision (refused while it receives traffic or has a tag).
    Delete { app: String, revision: String },
}

#[derive(Debug, Args)]
pub(crate) struct TrafficArgs {
    /// The app.
    app: String,
    /// New split as REVISION=PERCENT pairs summing to 100; without any, show the current one.
    #[arg(value_name = "REVISION=PERCENT")]
    split: Vec<String>,
    /// Point a tag at a revision: TAG=REVISION (repeatable).
    #[arg(long = "tag", value_name = "TAG=REVISION")]
    tags: Vec<String>,
    /// Remove a tag (repeatable).
    #[arg(long = "untag", value_name = "TAG")]
    untag: Vec<String>,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Debug, Args)]
pub(crate) struct RollbackArgs {
    /// The app.
    app: String,
    /// Send all traffic to this revision instead of restoring the previous setting.
    #[arg(long)]
    to: Option<String>,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum TokensCommand {
    /// List tokens (never their secrets).
    List(OutputArgs),
    /// Create a token; its secret is printed once.
    Create {
        /// What it is for.
        #[arg(long)]
        name: String,
        /// admin, deployer or viewer.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Limit it to this app (repeatable); default: all apps.
        #[arg(long = "app")]
        apps: Vec<String>,
        /// Limit it to these scopes (comma-separated or repeated): read, deploy, traffic,
        /// data-read, data-write, secrets, admin; default: all its role allows.
        #[arg(long = "scope", value_delimiter = ',')]
        scopes: Vec<Scope>,
        /// Expire it after this long, e.g. `12h`, `30d`; default: never.
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<std::time::Duration>,
        /// The user it stands for, as policies name it (`Nimbus::User::"alice"`).
        #[arg(long)]
        user: Option<String>,
        /// A group it is in, as policies name it (`Nimbus::Group::"ops"`; repeatable).
        #[arg(long = "group")]
        groups: Vec<String>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Revoke a token at once.
    Revoke { id: String },
}

#[derive(Debug, Args)]
pub(crate) struct LoginArgs {
    /// URL of the control API.
    #[arg(long)]
    server: String,
    /// API token (or NIMBUS_TOKEN).
    #[arg(long, env = "NIMBUS_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// For an https:// server: trust only this CA certificate (PEM), e.g. the one `nimbus
    /// server --tls auto` prints. Its contents are saved with the login (pinned), so later
    /// commands trust exactly this root.
    #[arg(long, env = "NIMBUS_CACERT")]
    cacert: Option<std::path::PathBuf>,
}

fn parse_role(s: &str) -> Result<Role, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| format!("unknown role `{s}`; use admin, deployer or viewer"))
}

pub(crate) fn apps(remote: &RemoteArgs, command: &AppsCommand) -> anyhow::Result<()> {
    let client = Client::new(remote)?;
    match command {
        AppsCommand::List(output) => {
            let apps: Vec<AppInfo> = client.get("/v1/apps")?;
            output.print(&apps, |apps| {
                println!("{:<24} {:<28} {:>9}  {:<20}  TRAFFIC", "APP", "HOSTS", "REVISIONS", "UPDATED");
                for a in apps {
                    let hosts = if a.hosts.is_empty() { "*".into() } else { a.hosts.join(",") };
                    println!(
                        "{:<24} {hosts:<28} {:>9}  {:<20}  {}",
                        a.name,
                        a.revisions,
                        time(a.updated_at),
                        traffic_line(&a.traffic)
                    );
                }
            })
        }
        AppsCommand::Show { app, output } => {
            let a: AppInfo = client.get(&format!("/v1/apps/{}", seg(app)))?;
            output.print(&a, |a| {
                println!("app:       {}", a.name);
                println!(
                    "hosts:     {}",
                    if a.hosts.is_empty() { "* (every host)".into() } else { a.hosts.join(", ") }
                );
                println!("revisions: {}", a.revisions);
                println!("traffic:   {}", traffic_line(&a.traffic));
                println!("created:   {}", time(a.created_at));
                println!("updated:   {}", time(a.updated_at));
            })
        }
        AppsCommand::Delete { app } => {
            client.delete(&format!("/v1/apps/{}", seg(app)))?;
            println!("Deleted app `{app}` and its revisions.");
            Ok(())
        }
    }
}

pub(crate) fn revisions(remote: &RemoteArgs, command: &RevisionsCommand) -> anyhow::Result<()> {
    let client = Client::new(remote)?;
    match command {
        RevisionsCommand::List { app, output } => {
            let revs: Vec<RevisionInfo> = client.get(&format!("/v1/apps/{}/revisions", seg(app)))?;
            output.print(&revs, |revs| {
                println!(
                    "{:<14} {:<20} {:<10} {:>7}  {:<12} ROUTES",
                    "REVISION", "CREATED", "VERSION", "TRAFFIC", "TAGS"
                );
                for r in revs {
                    println!(
                        "{:<14} {:<20} {:<10} {:>6}%  {:<12} {}",
                        r.id,
                        time(r.created_at),
                        r.version.as_deref().unwrap_or("-"),
                        r.percent,
                        if r.tags.is_empty() { "-".into() } else { r.tags.join(",") },
                        r.routes.join(" ")
                    );
                    if let Some(source) = &r.source {
                        println!("{:<14} from {source}", "");
                    }
                }
            })
        }
        RevisionsCommand::Show { app, revision, output } => {
            let r: RevisionDetail = client.get(&format!("/v1/apps/{}/revisions/{}", seg(app), seg(revision)))?;
            output.print(&r, |r| {
                let i = &r.info;
                println!("revision: {} of app `{}`", i.id, i.app);
                println!("created:  {}", time(i.created_at));
                println!(
                    "traffic:  {}%{}",
                    i.percent,
                    if i.tags.is_empty() { String::new() } else { format!(", tags {}", i.tags.join(", ")) }
                );
                println!("routes:   {}", i.routes.join(" "));
                if let Some(source) = &i.source {
                    println!("source:   {source}");
                }
                for a in &i.artifacts {
                    println!("artifact: {:<16} {} ({} bytes)", a.component, a.digest, a.size);
                }
                if let Some(report) = &r.supply {
                    supply(report);
                }
                println!("--- nimbus.toml\n{}", r.manifest.trim_end());
            })
        }
        RevisionsCommand::Delete { app, revision } => {
            client.delete(&format!("/v1/apps/{}/revisions/{}", seg(app), seg(revision)))?;
            println!("Deleted revision {revision} of app `{app}`.");
            Ok(())
        }
    }
}

pub(crate) fn traffic(remote: &RemoteArgs, args: &TrafficArgs) -> anyhow::Result<()> {
    let client = Client::new(remote)?;
    let path = format!("/v1/apps/{}/traffic", seg(&args.app));
    let mut traffic: Traffic = client.get(&path)?;
    if !(args.split.is_empty() && args.tags.is_empty() && args.untag.is_empty()) {
        if !args.split.is_empty() {
            traffic.targets = args.split.iter().map(|s| parse_split(s)).collect::<anyhow::Result<_>>()?;
        }
        for t in &args.tags {
            let (tag, rev) = t.split_once('=').with_context(|| format!("`{t}` is not TAG=REVISION"))?;
            traffic.tags.insert(tag.to_string(), rev.to_string());
        }
        for tag in &args.untag {
            if traffic.tags.remove(tag).is_none() {
                bail!("app `{}` has no tag `{tag}`", args.app);
            }
        }
        traffic = client.send(Method::PUT, &path, &traffic)?;
    }
    args.output.print(&traffic, |t| println!("{}: {}", args.app, traffic_line(t)))
}

fn parse_split(s: &str) -> anyhow::Result<TrafficTarget> {
    let (revision, percent) = s.split_once('=').with_context(|| format!("`{s}` is not REVISION=PERCENT"))?;
    let percent = percent.trim_end_matches('%');
    let percent: u8 =
        percent.parse().with_context(|| format!("`{percent}` in `{s}` is not a percent from 0 to 100"))?;
    Ok(TrafficTarget { revision: revision.to_string(), percent })
}

pub(crate) fn rollback(remote: &RemoteArgs, args: &RollbackArgs) -> anyhow::Result<()> {
    let client = Client::new(remote)?;
    let traffic: Traffic = client.send(
        Method::POST,
        &format!("/v1/apps/{}/rollback", seg(&args.app)),
        &RollbackRequest { to: args.to.clone() },
    )?;
    args.output.print(&traffic, |t| println!("Rolled back app `{}`: {}", args.app, traffic_line(t)))
}

pub(crate) fn tokens(remote: &RemoteArgs, command: &TokensCommand) -> anyhow::Result<()> {
    let client = Client::new(remote)?;
    match command {
        TokensCommand::List(output) => {
            let tokens: Vec<TokenInfo> = client.get("/v1/tokens")?;
            output.print(&tokens, |tokens| {
                println!(
                    "{:<14} {:<9} {:<16} {:<20} {:<20} {:<20} {:<20} NAME",
                    "ID", "ROLE", "APPS", "SCOPES", "CREATED", "EXPIRES", "LAST USED"
                );
                for t in tokens {
                    let apps = if t.apps.is_empty() { "*".into() } else { t.apps.join(",") };
                    let scopes: Vec<_> = t.effective_scopes().iter().map(|s| s.name()).collect();
                    let scopes = if scopes.len() == t.role.scopes().len() { "*".into() } else { scopes.join(",") };
                    let expires = t.expires_at.map_or_else(|| "never".into(), time);
                    let used = t.last_used_at.map_or_else(|| "never".into(), time);
                    println!(
                        "{:<14} {:<9} {apps:<16} {scopes:<20} {:<20} {expires:<20} {used:<20} {}",
                        t.id,
                        t.role,
                        time(t.created_at),
                        t.name
                    );
                }
            })
        }
        TokensCommand::Create { name, role, apps, scopes, ttl, user, groups, output } => {
            let new = NewToken {
                name: name.clone(),
                role: *role,
                apps: apps.clone(),
                scopes: scopes.clone(),
                ttl_s: ttl.map(|t| t.as_secs().max(1)),
                user: user.clone(),
                groups: groups.clone(),
            };
            let created: CreatedToken = client.send(Method::POST, "/v1/tokens", &new)?;
            output.print(&created, |c| {
                let expires = c.info.expires_at.map_or_else(String::new, |at| format!(", expires {}", time(at)));
                println!("Created token {} ({}{expires}). It is shown only this once:", c.info.id, c.info.role);
                println!("{}", c.token);
            })
        }
        TokensCommand::Revoke { id } => {
            client.delete(&format!("/v1/tokens/{}", seg(id)))?;
            println!("Revoked token {id}.");
            Ok(())
        }
    }
}

pub(crate) fn login(args: &LoginArgs) -> anyhow::Result<()> {
    let cacert = args.cacert.as_deref().map(crate::remote::read_ca).transpose()?;
    let client = Client::with(&args.server, args.token.clone(), cacert.as_deref())?;
    let who: Whoami = client.get("/v1/whoami").context("the server did not accept these credentials")?;
    let path = Config { server: Some(client.base().to_string()), token: args.token.clone(), cacert }.save()?;
    match who.token {
        Some(t) => {
            println!("Logged in to {} with token {} ({}); saved to {}", client.base(), t.id, t.role, path.display())
        }
        None => println!("Using {} in dev mode (no token); saved to {}", client.base(), path.display()),
    }
    Ok(())
}

/// `abc123=90% def456=10% (canary → def456)`.
pub(crate) fn traffic_line(t: &Traffic) -> String {
    let mut parts: Vec<String> = t.targets.iter().map(|x| format!("{}={}%", x.revision, x.percent)).collect();
    if parts.is_empty() {
        parts.push("none".into());
    }
    let tags: BTreeMap<_, _> = t.tags.iter().collect();
    if !tags.is_empty() {
        let list: Vec<String> = tags.iter().map(|(tag, rev)| format!("{tag} → {rev}")).collect();
        parts.push(format!("(tags: {})", list.join(", ")));
    }
    parts.join(" ")
}

/// The supply-chain report of a revision, for people.
fn supply(r: &nimbus_control::SupplyReport) {
    let policy = r.block.as_ref().map_or_else(|| "report only".to_string(), |b| format!("blocks {b} and above"));
    println!(
        "supply:   checked {} against {} advisories ({policy}); worst: {}",
        time(r.scanned_at),
        r.advisories,
        r.worst.as_deref().unwrap_or("none")
    );
    if r.trusted_signers > 0 {
        let required = if r.require_signatures { "required" } else { "checked when present" };
        println!("          signatures {required} ({} trusted signers)", r.trusted_signers);
    }
    for c in &r.components {
        let from = if c.sources.is_empty() { "no inventory".to_string() } else { c.sources.join(", ") };
        println!("  {:<16} {} dependencies ({from})", c.component, c.packages);
        let signed = c
            .signed_by
            .as_ref()
            .map_or_else(|| "not signed by a trusted key".to_string(), |s| format!("signed by `{s}`"));
        println!("    {} {signed}", c.digest);
        for f in &c.findings {
            let fixed = f.fixed.as_ref().map_or_else(String::new, |v| format!(", fixed in {v}"));
            println!(
                "    {} {:<8} {} {} ({}){fixed}: {}",
                f.id, f.severity, f.package, f.version, f.ecosystem, f.summary
            );
        }
        for reach in c.reach.iter().filter(|r| r.advice.is_some()) {
            println!("    {}: {}", reach.capability, reach.advice.as_deref().unwrap_or_default());
        }
        for note in &c.notes {
            println!("    note: {note}");
        }
    }
}
