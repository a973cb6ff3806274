//! Root-cause ranking over the trace call graph. Every span is charged to a node: the component
//! it names (`nimbus.component`: functions, services, actors, mesh calls), or the dependency a
//! client span calls (a KV bucket, a topic, an outbound host), or else its parent's node. A
//! span's own time is its duration less its children's, so each trace's time is split between
//! the nodes that spent it, and a failure is charged to the node of the deepest failed span
//! (where the error began). For an anomaly of one component, the traces through it during the
//! anomaly are compared with those before it: the nodes whose own time or error origins grew
//! explain the change, in proportion to how much of it they account for, and a node a new
//! revision changed shortly before the anomaly began is strong evidence on top.
use std::collections::{BTreeMap, HashMap};

use crate::SpanView;

/// A deploy that changed an app's serving revision.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Change {
    /// When it started serving, in Unix milliseconds.
    pub at: u64,
    /// The revision served before it, if any.
    pub from: Option<String>,
    /// The revision served since.
    pub to: String,
    /// The components whose code or configuration differ between the two.
    pub components: Vec<String>,
}

/// A ranked suspect of an anomaly.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Suspect {
    /// The component or dependency (`kv BUCKET`, `topic NAME`, `outbound HOST`).
    pub component: String,
    /// How much of the change it explains (0..1), plus 0.5 when a new revision changed it just
    /// before the anomaly.
    pub score: f64,
    /// Why, in words.
    pub evidence: Vec<String>,
    /// Example traces of the anomaly where it spent the most time or failed.
    pub traces: Vec<String>,
    /// Log lines of those traces it wrote.
    #[serde(default)]
    pub logs: Vec<String>,
}

/// What to rank for.
#[derive(Debug)]
pub struct Question<'a> {
    /// The component the anomaly is on.
    pub focus: &'a str,
    /// Whether the anomaly is of failures (else of time, or of something else: both count).
    pub kind: Cause,
    /// When the anomaly began (Unix ms).
    pub began: u64,
    /// Traces during the anomaly.
    pub during: &'a [Vec<SpanView>],
    /// Traces before it.
    pub before: &'a [Vec<SpanView>],
    /// The app's recent deploys.
    pub changes: &'a [Change],
}

/// Which change of the focus the suspects must explain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// Time: latency, queueing.
    Time,
    /// Failures.
    Errors,
    /// Anything else (throughput, memory): time and failures weigh the same.
    Either,
}

/// How far before an anomaly a deploy still counts as its likely cause: the window its traces
/// are compared with (an older deploy's effect is in that baseline already).
const DEPLOY_WINDOW_MS: u64 = 5 * 60 * 1000;
/// Suspects returned at most.
const MAX_SUSPECTS: usize = 5;

#[derive(Debug, Default, Clone, Copy)]
struct NodeStats {
    own_ns: u64,
    failed: bool,
}

/// The node each span is charged to.
fn node_of(span: &SpanView, parent: Option<&str>) -> Option<String> {
    if let Some(c) = span.attr("nimbus.component") {
        return Some(c.to_string());
    }
    if let Some(bucket) = span.attr("db.collection.name") {
        return Some(format!("kv {bucket}"));
    }
    if let Some(topic) = span.attr("messaging.destination.name") {
        return Some(format!("topic {topic}"));
    }
    if span.kind == "client"
        && let Some(host) = span.attr("server.address")
    {
        return Some(format!("outbound {host}"));
    }
    parent.map(str::to_string)
}

/// Each node's own time and whether a failure began in it, in one trace.
///
/// A span whose parent is not in the trace (a service that started its outgoing call's span
/// itself and did not export it) hangs under the shortest span that encloses it in time, so its
/// time is not counted twice and a failure in it is seen under its caller's. A trace's failure
/// began in the deepest failed spans without a failed child.
fn profile(trace: &[SpanView]) -> HashMap<String, NodeStats> {
    let by_id: HashMap<&str, &SpanView> = trace.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let mut children: HashMap<&str, Vec<&SpanView>> = HashMap::new();
    let mut roots = Vec::new();
    for s in trace {
        match s.parent_span_id.as_deref().filter(|p| by_id.contains_key(p)) {
            Some(p) => children.entry(p).or_default().push(s),
            None => match enclosing(trace, s) {
                Some(p) => children.entry(p.span_id.as_str()).or_default().push(s),
                None => roots.push(s),
            },
        }
    }
    let mut out: HashMap<String, NodeStats> = HashMap::new();
    let mut origins: Vec<(String, usize)> = Vec::new();
    // Depth-first from each root, carrying the parent's node and the depth.
    let mut stack: Vec<(&SpanView, Option<String>, usize)> = roots.into_iter().map(|r| (r, None, 0)).collect();
    while let Some((span, parent, depth)) = stack.pop() {
        let node = node_of(span, parent.as_deref()).unwrap_or_else(|| "gateway".into());
        let kids = children.get(span.span_id.as_str()).map(Vec::as_slice).unwrap_or_default();
        let kids_ns: u64 = kids.iter().map(|k| k.duration().as_nanos() as u64).sum();
        let own = (span.duration().as_nanos() as u64).saturating_sub(kids_ns);
        out.entry(node.clone()).or_default().own_ns += own;
        if span.status == "error" && !kids.iter().any(|k| k.status == "error") {
            origins.push((node.clone(), depth));
        }
        for k in kids {
            stack.push((k, Some(node.clone()), depth + 1));
        }
    }
    let deepest = origins.iter().map(|o| o.1).max().unwrap_or_default();
    for (node, depth) in origins {
        if depth == deepest {
            out.entry(node).or_default().failed = true;
        }
    }
    out
}

/// The shortest span of `trace` strictly longer than `orphan` that encloses it in time.
fn enclosing<'a>(trace: &'a [SpanView], orphan: &SpanView) -> Option<&'a SpanView> {
    trace
        .iter()
        .filter(|s| {
            s.start_unix_nano <= orphan.start_unix_nano
                && s.end_unix_nano >= orphan.end_unix_nano
                && s.duration() > orphan.duration()
        })
        .min_by_key(|s| s.duration())
}

#[derive(Debug, Default)]
struct Totals {
    own_ns: u64,
    failed: usize,
    /// (own time, trace id) of the traces it was in.
    examples: Vec<(u64, bool, String)>,
}

/// How a node's own time (ms per request) and failures (share of requests) changed.
struct Shift<'a> {
    node: &'a String,
    time: f64,
    failures: f64,
    /// (ms, failure share) before and during.
    then: (f64, f64),
    now: (f64, f64),
}

/// Per node: own time and failures summed over the traces through `focus`; and how many.
fn totals(traces: &[Vec<SpanView>], focus: &str) -> (BTreeMap<String, Totals>, usize) {
    let mut out: BTreeMap<String, Totals> = BTreeMap::new();
    let mut n = 0;
    for trace in traces {
        let profile = profile(trace);
        if !profile.contains_key(focus) {
            continue;
        }
        n += 1;
        let id = trace.first().map(|s| s.trace_id.clone()).unwrap_or_default();
        for (node, s) in profile {
            let t = out.entry(node).or_default();
            t.own_ns += s.own_ns;
            t.failed += usize::from(s.failed);
            t.examples.push((s.own_ns, s.failed, id.clone()));
        }
    }
    (out, n)
}

/// The suspects of an anomaly, best first (see the module doc).
pub fn rank(q: &Question<'_>) -> Vec<Suspect> {
    let (during, n_during) = totals(q.during, q.focus);
    let (before, n_before) = totals(q.before, q.focus);
    let per = |t: Option<&Totals>, n: usize| -> (f64, f64) {
        match t {
            Some(t) if n > 0 => (t.own_ns as f64 / n as f64 / 1e6, t.failed as f64 / n as f64),
            _ => (0.0, 0.0),
        }
    };
    let mut shifts: Vec<Shift<'_>> = during
        .keys()
        .map(|node| {
            let now = per(during.get(node), n_during);
            let then = per(before.get(node), n_before);
            Shift { node, time: (now.0 - then.0).max(0.0), failures: (now.1 - then.1).max(0.0), then, now }
        })
        .collect();
    let time_sum: f64 = shifts.iter().map(|s| s.time).sum();
    let fail_sum: f64 = shifts.iter().map(|s| s.failures).sum();
    let share = |x: f64, sum: f64| if sum > 0.0 { x / sum } else { 0.0 };
    let lo = q.began.saturating_sub(DEPLOY_WINDOW_MS);
    let mut out: Vec<Suspect> = shifts
        .drain(..)
        .filter_map(|Shift { node, time: dt, failures: df, then, now }| {
            let (ts, fs) = (share(dt, time_sum), share(df, fail_sum));
            let mut score = match q.kind {
                Cause::Time => ts,
                Cause::Errors => fs,
                Cause::Either => (ts + fs) / 2.0,
            };
            let mut evidence = Vec::new();
            if ts > 0.05 {
                evidence.push(format!(
                    "own time per request through {} {:.1} → {:.1} ms ({:+.1} ms, {:.0} % of the increase)",
                    q.focus,
                    then.0,
                    now.0,
                    now.0 - then.0,
                    ts * 100.0
                ));
            }
            if fs > 0.05 {
                evidence.push(format!(
                    "failures began here in {:.0} % of requests (before: {:.0} %), {:.0} % of the new failures",
                    now.1 * 100.0,
                    then.1 * 100.0,
                    fs * 100.0
                ));
            }
            let deploy = q.changes.iter().rev().find(|c| {
                c.at >= lo && c.at <= q.began.saturating_add(60_000) && c.components.iter().any(|x| x == node)
            });
            if let Some(c) = deploy {
                score += 0.5;
                let when = if c.at <= q.began {
                    format!("{} s before the anomaly began", (q.began - c.at) / 1000)
                } else {
                    format!("{} s after the anomaly began", (c.at - q.began) / 1000)
                };
                evidence.push(format!(
                    "revision {} changed it ({} → {}) {when}",
                    c.to,
                    c.from.as_deref().unwrap_or("nothing"),
                    c.to
                ));
            }
            if score <= 0.0 && node != q.focus {
                return None;
            }
            if evidence.is_empty() {
                evidence
                    .push(format!("no change of its own time or failures in {n_during} traces (vs {n_before} before)"));
            }
            let mut examples = during.get(node).map(|t| t.examples.clone()).unwrap_or_default();
            examples.sort_by_key(|e| std::cmp::Reverse((e.1, e.0)));
            let traces = examples.into_iter().take(3).map(|e| e.2).collect();
            Some(Suspect { component: node.clone(), score, evidence, traces, logs: Vec::new() })
        })
        .collect();
    // Changed by the deploy and on the focus's path before it, but in none of the anomaly's
    // traces (its calls stopped): still a suspect. Without any trace to go by, so is every
    // component the deploy changed. One off the focus's path is not.
    let blind = n_during + n_before == 0;
    for c in q.changes.iter().filter(|c| c.at >= lo && c.at <= q.began.saturating_add(60_000)) {
        for node in &c.components {
            let on_path = before.contains_key(node) || node == q.focus;
            if (on_path || blind) && !out.iter().any(|s| &s.component == node) {
                let why = if blind {
                    format!("revision {} changed it; there are no traces to check it against", c.to)
                } else {
                    format!(
                        "revision {} changed it, and it is on the path before the anomaly but in none of its traces",
                        c.to
                    )
                };
                out.push(Suspect {
                    component: node.clone(),
                    score: 0.5,
                    evidence: vec![why],
                    traces: Vec::new(),
                    logs: Vec::new(),
                });
            }
        }
    }
    if out.is_empty() {
        out.push(Suspect {
            component: q.focus.to_string(),
            score: 0.0,
            evidence: vec!["no traces through it to rank by (tracing off or none kept)".into()],
            traces: Vec::new(),
            logs: Vec::new(),
        });
    }
    out.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.component.cmp(&b.component)));
    out.truncate(MAX_SUSPECTS);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A span: (id, parent, component attribute, start ms, end ms, failed).
    type Plan<'a> = (&'a str, Option<&'a str>, Option<&'a str>, u64, u64, bool);

    fn trace(id: &str, spans: &[Plan<'_>]) -> Vec<SpanView> {
        spans
            .iter()
            .map(|&(span, parent, component, start, end, failed)| SpanView {
                trace_id: id.into(),
                span_id: span.into(),
                parent_span_id: parent.map(str::to_string),
                name: span.into(),
                kind: if component.is_none() { "client".into() } else { "server".into() },
                start_unix_nano: start * 1_000_000,
                end_unix_nano: end * 1_000_000,
                status: if failed { "error".into() } else { "unset".into() },
                status_message: String::new(),
                attributes: component
                    .map(|c| [("nimbus.component".to_string(), serde_json::json!(c))].into())
                    .unwrap_or_default(),
            })
            .collect()
    }

    /// front (own 2 ms) → call → api (own `api_ms`, failing if asked) → kv (1 ms).
    fn request(id: usize, api_ms: u64, api_fails: bool) -> Vec<SpanView> {
        slower(id, 0, api_ms, api_fails)
    }

    /// Like [`request`], front taking `front_ms` more of its own.
    fn slower(id: usize, front_ms: u64, api_ms: u64, api_fails: bool) -> Vec<SpanView> {
        let id = format!("{id:032x}");
        let end = 2 + api_ms + 1;
        let mut spans = trace(
            &id,
            &[
                ("root", None, Some("front"), 0, end + front_ms, api_fails),
                ("call", Some("root"), None, 1, end - 1, api_fails),
                ("api", Some("call"), Some("api"), 1, end - 1, api_fails),
                ("get", Some("api"), None, end - 2, end - 1, false),
            ],
        );
        spans[3].attributes.insert("db.collection.name".into(), serde_json::json!("carts"));
        spans
    }

    fn ask<'a>(
        kind: Cause,
        during: &'a [Vec<SpanView>],
        before: &'a [Vec<SpanView>],
        changes: &'a [Change],
    ) -> Vec<Suspect> {
        rank(&Question { focus: "front", kind, began: 10_000_000, during, before, changes })
    }

    #[test]
    fn the_component_whose_own_time_grew_ranks_first_not_its_caller() {
        let before: Vec<_> = (0..20).map(|i| request(i, 5, false)).collect();
        let during: Vec<_> = (20..40).map(|i| request(i, 205, false)).collect();
        let s = ask(Cause::Time, &during, &before, &[]);
        assert_eq!(s[0].component, "api", "{s:#?}");
        assert!(s[0].score > 0.9, "{s:#?}");
        assert!(s[0].evidence[0].contains("5.0 → 205.0 ms"), "{:?}", s[0].evidence);
        assert_eq!(s[0].traces.len(), 3);
        assert!(s.iter().all(|x| x.component != "kv carts" || x.score < 0.1), "{s:#?}");
    }

    #[test]
    fn failures_are_charged_to_where_they_began() {
        let before: Vec<_> = (0..20).map(|i| request(i, 5, false)).collect();
        let during: Vec<_> = (20..40).map(|i| request(i, 5, i % 2 == 0)).collect();
        let s = ask(Cause::Errors, &during, &before, &[]);
        assert_eq!(s[0].component, "api", "{s:#?}");
        assert!(s[0].evidence.iter().any(|e| e.contains("failures began here in 50 %")), "{s:#?}");
        // front failed too, but only because api did.
        assert!(s.iter().find(|x| x.component == "front").is_none_or(|f| f.score == 0.0), "{s:#?}");
    }

    #[test]
    fn a_component_changed_by_a_deploy_just_before_is_strong_evidence() {
        // Both slowed as much; the deploy changed front.
        let before: Vec<_> = (0..20).map(|i| request(i, 5, false)).collect();
        let during: Vec<_> = (20..40).map(|i| slower(i, 20, 25, false)).collect();
        let deploy = [Change {
            at: 10_000_000 - 30_000,
            from: Some("r1".into()),
            to: "r2".into(),
            components: vec!["front".into()],
        }];
        let s = ask(Cause::Time, &during, &before, &deploy);
        assert_eq!(s[0].component, "front", "{s:#?}");
        assert!(s[0].evidence.iter().any(|e| e.contains("revision r2 changed it (r1 → r2) 30 s before")), "{s:#?}");
        let old = [Change { at: 10_000_000 - 3_600_000, ..deploy[0].clone() }];
        assert_eq!(ask(Cause::Time, &during, &before, &old)[0].component, "api", "an hour-old deploy is no evidence");
        let elsewhere = [Change { components: vec!["billing".into()], ..deploy[0].clone() }];
        let s = ask(Cause::Time, &during, &before, &elsewhere);
        assert!(s.iter().all(|x| x.component != "billing"), "a deploy off the path is no evidence: {s:#?}");
        let s = ask(Cause::Time, &[], &[], &elsewhere);
        assert_eq!(s[0].component, "billing", "without traces, the deploy is all there is: {s:#?}");
    }

    #[test]
    fn a_callee_whose_parent_span_is_missing_hangs_under_its_caller() {
        // api (a service) called store with a span of its own it did not export: store's spans
        // name a parent that is not in the trace. Its failures and time are still its own.
        let call = |id: usize, store_ms: u64, fails: bool| {
            let id = format!("{id:032x}");
            let end = 4 + store_ms;
            let mut spans = trace(
                &id,
                &[
                    ("root", None, Some("front"), 0, end + 2, fails),
                    ("api", Some("root"), Some("api"), 1, end + 1, fails),
                    ("store", Some("unexported"), Some("store"), 2, end, fails),
                ],
            );
            spans[2].parent_span_id = Some("unexported".into());
            spans
        };
        let before: Vec<_> = (0..20).map(|i| call(i, 5, false)).collect();
        let during: Vec<_> = (20..40).map(|i| call(i, 5, i % 2 == 0)).collect();
        let s = ask(Cause::Errors, &during, &before, &[]);
        assert_eq!(s[0].component, "store", "{s:#?}");
        assert!(s.iter().all(|x| x.component == "store" || x.score == 0.0), "one origin per failure: {s:#?}");
        let during: Vec<_> = (20..40).map(|i| call(i, 305, false)).collect();
        let s = ask(Cause::Time, &during, &before, &[]);
        assert_eq!(s[0].component, "store", "{s:#?}");
        assert!(s[0].score > 0.9, "api's span is not charged store's time: {s:#?}");
    }

    #[test]
    fn without_traces_the_focus_is_named_and_says_why() {
        let s = ask(Cause::Time, &[], &[], &[]);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].component, "front");
        assert!(s[0].evidence[0].contains("no traces"));
    }

    #[test]
    fn traces_not_through_the_focus_do_not_count() {
        let before: Vec<_> = (0..20).map(|i| request(i, 5, false)).collect();
        let mut during: Vec<_> = (20..40).map(|i| request(i, 5, false)).collect();
        // Another component's slow traces do not make `front`'s suspects.
        during.extend((40..60).map(|i| trace(&format!("{i:032x}"), &[("x", None, Some("other"), 0, 900, false)])));
        let s = ask(Cause::Time, &during, &before, &[]);
        assert!(s.iter().all(|x| x.component != "other"), "{s:#?}");
    }
}
