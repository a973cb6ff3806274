//! Node labels (`region=eu-west,zone=a`): keys and values as in Kubernetes (1 to 63 letters,
//! digits, `-`, `_`, `.`; keys may carry a `prefix/`; [`nimbus_manifest::label_key_ok`]),
//! checked once at start; an app's `[placement]` is matched against them.
use std::collections::BTreeMap;

/// A node's labels, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels(pub BTreeMap<String, String>);

impl Labels {
    /// The value of label `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
}

/// Parses `key=value,key=value`; the error says which pair is wrong and why.
pub fn parse_labels(text: &str) -> Result<Labels, String> {
    let mut labels = BTreeMap::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("label `{pair}` has no `=`; write labels as `region=eu-west,zone=a`"))?;
        let (key, value) = (key.trim(), value.trim());
        if !nimbus_manifest::label_key_ok(key) {
            return Err(format!(
                "label key `{key}` is not valid: 1 to 63 letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit (an optional `prefix/` before)"
            ));
        }
        if !nimbus_manifest::label_value_ok(value) {
            return Err(format!(
                "label `{key}` has value `{value}`: use at most 63 letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit"
            ));
        }
        if labels.insert(key.to_string(), value.to_string()).is_some() {
            return Err(format!("label `{key}` is given twice"));
        }
    }
    Ok(Labels(labels))
}

#[cfg(test)]
mod tests {
    use super::parse_labels;

    #[test]
    fn labels_parse_and_bad_ones_say_why() {
        let l = parse_labels("region=eu-west, zone=a,topology.kubernetes.io/zone=eu-west-1a").unwrap();
        assert_eq!(l.get("region"), Some("eu-west"));
        assert_eq!(l.get("topology.kubernetes.io/zone"), Some("eu-west-1a"));
        assert!(parse_labels("").unwrap().0.is_empty());
        for (bad, says) in [
            ("region", "no `=`"),
            ("-x=1", "key `-x`"),
            ("region=eu west", "value `eu west`"),
            ("a=1,a=2", "twice"),
            ("/x=1", "key `/x`"),
        ] {
            let e = parse_labels(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
