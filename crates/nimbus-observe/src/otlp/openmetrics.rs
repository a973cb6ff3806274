//! The registry's OpenMetrics text (what `/metrics` serves) as OTLP metrics: a counter becomes a
//! cumulative monotonic sum, a gauge (or an untyped family) a gauge, a histogram an OTLP
//! histogram with its explicit bounds and per-bucket counts; labels become attributes; the name
//! is the family's (`# TYPE` line), its `# HELP` the description and its `# UNIT` the unit.
//! Other kinds (info, state sets) have no OTLP counterpart and are left out.
use std::collections::HashMap;

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, Sum, metric,
    number_data_point,
};

/// The times every point of a snapshot carries (nanoseconds since the Unix epoch).
#[derive(Debug, Clone, Copy)]
pub(super) struct Times {
    /// When the counters started counting (cumulative temporality).
    pub(super) start: u64,
    /// When the snapshot was taken.
    pub(super) now: u64,
}

/// The labels of a sample, in their order.
type Labels = Vec<(String, String)>;

/// One family being read.
struct Family {
    name: String,
    kind: String,
    help: String,
    unit: String,
    numbers: Vec<NumberDataPoint>,
    histograms: Vec<HistogramDataPoint>,
    /// The index in `histograms` of each label set (rendered).
    series: HashMap<String, usize>,
    /// The cumulative count of the last bucket read of each histogram point.
    counted: Vec<u64>,
}

/// The OTLP metrics of an OpenMetrics text; a line it cannot read is an error naming it.
pub(super) fn convert(text: &str, times: Times) -> Result<Vec<Metric>, String> {
    let mut families: Vec<Family> = Vec::new();
    let mut help: HashMap<String, String> = HashMap::new();
    let mut units: HashMap<String, String> = HashMap::new();
    for line in text.lines().filter(|l| !l.is_empty() && *l != "# EOF") {
        let bad = || format!("cannot read the metrics line `{line}`");
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let (what, name, rest) = (parts.next(), parts.next().ok_or_else(bad)?, parts.next().unwrap_or(""));
            match what {
                Some("HELP") => drop(help.insert(name.into(), rest.into())),
                Some("UNIT") => drop(units.insert(name.into(), rest.into())),
                Some("TYPE") => families.push(Family::new(name, rest)),
                _ => return Err(bad()),
            }
            continue;
        }
        let family = families.last_mut().ok_or_else(bad)?;
        let (series, labels, value) = sample(line).ok_or_else(bad)?;
        family.add(series, labels, value, times).ok_or_else(bad)?;
    }
    Ok(families
        .into_iter()
        .filter_map(|mut f| {
            f.help = help.remove(&f.name).unwrap_or_default();
            f.unit = units.remove(&f.name).map(|u| ucum(&u)).unwrap_or_default();
            f.into_metric()
        })
        .collect())
}

impl Family {
    fn new(name: &str, kind: &str) -> Self {
        Self {
            name: name.into(),
            kind: kind.into(),
            help: String::new(),
            unit: String::new(),
            numbers: Vec::new(),
            histograms: Vec::new(),
            series: HashMap::new(),
            counted: Vec::new(),
        }
    }

    /// Adds the sample `series{labels} value`; `None` if it does not fit the family.
    fn add(&mut self, series: &str, mut labels: Labels, value: &str, times: Times) -> Option<()> {
        let suffix = series.strip_prefix(self.name.as_str())?;
        match (self.kind.as_str(), suffix) {
            ("counter", "_total") | ("gauge" | "unknown", "") => {
                let value = match value.parse::<i64>() {
                    Ok(n) => number_data_point::Value::AsInt(n),
                    Err(_) => number_data_point::Value::AsDouble(number(value)?),
                };
                self.numbers.push(NumberDataPoint {
                    attributes: attributes(labels),
                    start_time_unix_nano: times.start,
                    time_unix_nano: times.now,
                    value: Some(value),
                    ..Default::default()
                });
            }
            ("histogram", "_bucket" | "_sum" | "_count") => {
                let le = labels.iter().position(|(k, _)| k == "le").map(|i| labels.remove(i).1);
                let point = self.histogram(labels, times);
                match suffix {
                    "_sum" => self.histograms[point].sum = Some(number(value)?),
                    "_count" => self.histograms[point].count = value.parse().ok()?,
                    _ => {
                        let cumulative: u64 = value.parse().ok()?;
                        let bucket = cumulative.checked_sub(self.counted[point])?;
                        self.counted[point] = cumulative;
                        let p = &mut self.histograms[point];
                        p.bucket_counts.push(bucket);
                        match le?.as_str() {
                            "+Inf" => {}
                            bound => p.explicit_bounds.push(number(bound)?),
                        }
                    }
                }
            }
            // Created timestamps and kinds without an OTLP counterpart.
            _ => {}
        }
        Some(())
    }

    /// The index of the histogram point of `labels`, added if it is new.
    fn histogram(&mut self, labels: Labels, times: Times) -> usize {
        let key = format!("{labels:?}");
        let next = self.histograms.len();
        let index = *self.series.entry(key).or_insert(next);
        if index == next {
            self.counted.push(0);
            self.histograms.push(HistogramDataPoint {
                attributes: attributes(labels),
                start_time_unix_nano: times.start,
                time_unix_nano: times.now,
                ..Default::default()
            });
        }
        index
    }

    fn into_metric(self) -> Option<Metric> {
        let cumulative = AggregationTemporality::Cumulative as i32;
        let data = match self.kind.as_str() {
            "counter" => metric::Data::Sum(Sum {
                data_points: self.numbers,
                aggregation_temporality: cumulative,
                is_monotonic: true,
            }),
            "gauge" | "unknown" => metric::Data::Gauge(Gauge { data_points: self.numbers }),
            "histogram" => {
                metric::Data::Histogram(Histogram { data_points: self.histograms, aggregation_temporality: cumulative })
            }
            _ => return None,
        };
        Some(Metric {
            name: self.name,
            description: self.help,
            unit: self.unit,
            data: Some(data),
            ..Default::default()
        })
    }
}

/// `series{labels} value [timestamp]` split into its parts (label values unescaped).
fn sample(line: &str) -> Option<(&str, Labels, &str)> {
    let (series, mut rest) = match line.find(['{', ' ']) {
        Some(i) => line.split_at(i),
        None => return None,
    };
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices();
        let mut key = String::new();
        loop {
            let (i, c) = chars.next()?;
            match c {
                '}' => {
                    rest = &inner[i + 1..];
                    break;
                }
                ',' => {}
                '=' => {
                    if chars.next()?.1 != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next()?.1 {
                            '"' => break,
                            '\\' => value.push(match chars.next()?.1 {
                                'n' => '\n',
                                other => other,
                            }),
                            other => value.push(other),
                        }
                    }
                    labels.push((std::mem::take(&mut key), value));
                }
                c => key.push(c),
            }
        }
    }
    let value = rest.split_whitespace().next()?;
    Some((series, labels, value))
}

/// An OpenMetrics number (`+Inf`, `-Inf` and `NaN` included).
fn number(text: &str) -> Option<f64> {
    match text {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => text.parse().ok(),
    }
}

fn attributes(labels: Labels) -> Vec<KeyValue> {
    labels
        .into_iter()
        .map(|(key, value)| KeyValue {
            key,
            value: Some(AnyValue { value: Some(any_value::Value::StringValue(value)) }),
            ..Default::default()
        })
        .collect()
}

/// The UCUM unit OTLP expects for an OpenMetrics unit.
fn ucum(unit: &str) -> String {
    match unit {
        "seconds" => "s".into(),
        "bytes" => "By".into(),
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP nimbus_requests Requests handled.
# TYPE nimbus_requests counter
nimbus_requests_total{app="shop",component="hello",kind="http",outcome="2xx"} 5
nimbus_requests_total{app="shop",component="a \"quoted\" one",kind="http",outcome="5xx"} 2
# HELP nimbus_cost Cost.
# TYPE nimbus_cost counter
nimbus_cost_total{app="shop"} 0.25
# HELP nimbus_instances Live instances.
# TYPE nimbus_instances gauge
nimbus_instances{app="shop",component="hello"} 3
# HELP nimbus_request_duration_seconds Time to the response head.
# TYPE nimbus_request_duration_seconds histogram
# UNIT nimbus_request_duration_seconds seconds
nimbus_request_duration_seconds_sum{app="shop",component="hello"} 0.75
nimbus_request_duration_seconds_count{app="shop",component="hello"} 5
nimbus_request_duration_seconds_bucket{le="0.1",app="shop",component="hello"} 2
nimbus_request_duration_seconds_bucket{le="0.5",app="shop",component="hello"} 4
nimbus_request_duration_seconds_bucket{le="+Inf",app="shop",component="hello"} 5
# TYPE nimbus_build info
nimbus_build_info{version="1"} 1
# EOF
"#;

    const TIMES: Times = Times { start: 10, now: 20 };

    fn attrs(kv: &[KeyValue]) -> Vec<(String, String)> {
        kv.iter()
            .map(|kv| {
                let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(any_value::Value::StringValue(s)) => s.clone(),
                    other => panic!("{other:?}"),
                };
                (kv.key.clone(), value)
            })
            .collect()
    }

    fn pair(k: &str, v: &str) -> (String, String) {
        (k.into(), v.into())
    }

    #[test]
    fn every_kind_converts_with_its_labels_as_attributes() {
        let metrics = convert(TEXT, TIMES).unwrap();
        let names: Vec<&str> = metrics.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["nimbus_requests", "nimbus_cost", "nimbus_instances", "nimbus_request_duration_seconds"]);

        let Some(metric::Data::Sum(sum)) = &metrics[0].data else { panic!("{:?}", metrics[0]) };
        assert_eq!(metrics[0].description, "Requests handled.");
        assert!(sum.is_monotonic);
        assert_eq!(sum.aggregation_temporality, AggregationTemporality::Cumulative as i32);
        assert_eq!(sum.data_points.len(), 2);
        let p = &sum.data_points[0];
        assert_eq!((p.start_time_unix_nano, p.time_unix_nano), (10, 20));
        assert_eq!(p.value, Some(number_data_point::Value::AsInt(5)));
        assert_eq!(
            attrs(&p.attributes),
            [pair("app", "shop"), pair("component", "hello"), pair("kind", "http"), pair("outcome", "2xx")]
        );
        assert_eq!(attrs(&sum.data_points[1].attributes)[1], pair("component", "a \"quoted\" one"));

        let Some(metric::Data::Sum(cost)) = &metrics[1].data else { panic!() };
        assert_eq!(cost.data_points[0].value, Some(number_data_point::Value::AsDouble(0.25)));

        let Some(metric::Data::Gauge(gauge)) = &metrics[2].data else { panic!() };
        assert_eq!(gauge.data_points[0].value, Some(number_data_point::Value::AsInt(3)));

        let h = &metrics[3];
        assert_eq!(h.unit, "s");
        let Some(metric::Data::Histogram(hist)) = &h.data else { panic!() };
        assert_eq!(hist.aggregation_temporality, AggregationTemporality::Cumulative as i32);
        let p = &hist.data_points[0];
        assert_eq!(attrs(&p.attributes), [pair("app", "shop"), pair("component", "hello")]);
        assert_eq!((p.count, p.sum), (5, Some(0.75)));
        assert_eq!(p.explicit_bounds, [0.1, 0.5]);
        assert_eq!(p.bucket_counts, [2, 2, 1], "per bucket, not cumulative");
    }

    #[test]
    fn a_line_it_cannot_read_is_named() {
        for bad in ["# TYPE x counter\nx_total{a=\"b\" 1", "x_total 1", "# TYPE x counter\nx_total{a=b} 1"] {
            let e = convert(bad, TIMES).unwrap_err();
            assert!(e.starts_with("cannot read the metrics line `"), "{e}");
        }
    }

    #[test]
    fn the_registry_converts() {
        let metrics = crate::Metrics::new();
        metrics.component("shop", "hello").http_request(200, std::time::Duration::from_millis(3));
        let converted = convert(&metrics.render(), TIMES).unwrap();
        let requests = converted.iter().find(|m| m.name == "nimbus_requests").unwrap();
        let Some(metric::Data::Sum(sum)) = &requests.data else { panic!() };
        let ok = sum.data_points.iter().find(|p| attrs(&p.attributes).contains(&pair("outcome", "2xx"))).unwrap();
        assert_eq!(ok.value, Some(number_data_point::Value::AsInt(1)));
        let duration = converted.iter().find(|m| m.name == "nimbus_request_duration_seconds").unwrap();
        let Some(metric::Data::Histogram(h)) = &duration.data else { panic!() };
        assert_eq!(h.data_points[0].count, 1);
        assert_eq!(h.data_points[0].bucket_counts.iter().sum::<u64>(), 1);
        assert_eq!(h.data_points[0].bucket_counts.len(), h.data_points[0].explicit_bounds.len() + 1);
    }
}
