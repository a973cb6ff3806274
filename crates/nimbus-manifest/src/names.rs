//! Names that other subsystems share with the manifest: topic and consumer-group names (one
//! grammar on every event-bus backend, so a name valid on a laptop is valid on JetStream) and
//! bucket names.

/// The longest topic or group name.
pub const MAX_TOPIC_NAME_LEN: usize = 100;

/// Checks a topic name (`dots = true`: lowercase letters, digits, `-`, `_`, `.` not first, last
/// or doubled) or a consumer-group name (`dots = false`: the same without `.`).
pub fn check_topic_name(name: &str, dots: bool) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty");
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return Err("longer than 100 bytes");
    }
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' || (dots && c == '.');
    if !name.chars().all(allowed) {
        return Err(if dots {
            "use lowercase letters, digits, `-`, `_` and `.`"
        } else {
            "use lowercase letters, digits, `-` and `_`"
        });
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) || name.ends_with('.') || name.contains("..") {
        return Err("must start with a letter or digit, and not end with `.` or contain `..`");
    }
    Ok(())
}

/// The longest KV bucket name.
pub const MAX_BUCKET_NAME_LEN: usize = 64;

/// Checks a KV bucket name: lowercase letters, digits, `-` and `_`, starting with a letter or
/// digit, at most 64 bytes.
pub fn check_bucket_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > MAX_BUCKET_NAME_LEN {
        return Err("use 1 to 64 characters");
    }
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        || !name.as_bytes()[0].is_ascii_alphanumeric()
    {
        return Err("use lowercase letters, digits, `-` and `_`, starting with a letter or digit");
    }
    Ok(())
}

/// Buckets the platform keeps in every app (`actors` holds its actors' state, `workflows` its
/// workflow runs): no grant or trigger may name them.
pub const RESERVED_BUCKETS: &[&str] = &["actors", "workflows"];

/// Topics and buckets whose name starts with this are the platform's (a bucket's change topic
/// `nimbus-kv.BUCKET`, a cron trigger's `nimbus-cron.N`): no grant or trigger may name them.
pub const RESERVED_NAME_PREFIX: &str = "nimbus";

/// The topic of a bucket's changes is this and the bucket's name (`nimbus-kv.carts`).
pub const KV_CHANGES_PREFIX: &str = "nimbus-kv.";

/// Whether `name` starts with [`RESERVED_NAME_PREFIX`].
pub(crate) fn is_reserved(name: &str) -> bool {
    name.starts_with(RESERVED_NAME_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        for ok in ["orders", "orders.dlq", "a", "o-1_x.y"] {
            assert!(check_topic_name(ok, true).is_ok(), "{ok}");
        }
        for bad in ["", "Orders", ".a", "a.", "a..b", "a b", "a/b", "a*", "a>", "-a", "ü"] {
            assert!(check_topic_name(bad, true).is_err(), "{bad}");
        }
        assert!(check_topic_name(&"a".repeat(101), true).is_err());
        assert!(check_topic_name("bill.ing", false).is_err());
    }
}
