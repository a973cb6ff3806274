//! Per-app scoping of what apps keep on a shared node: every KV bucket, topic, consumer group
//! and actor type is stored under a name that carries its app, so two apps using the same name
//! never meet. The storage name is `APP` + [`SCOPE_MARK`] + `NAME`; app, bucket, topic and group
//! names are lower-case, so the first upper-case letter marks where the app ends and no two
//! (app, name) pairs share a storage name (`a_b` + `c` is `a_b_A_c`, `a` + `b_c` is `a_A_b_c`).
//! The mark is made of `[A-Za-z0-9_-]` only, so a storage name is valid as a redb table name,
//! a JetStream stream or KV bucket name and a NATS subject token.

/// What stands between the app and the name in a storage name.
pub const SCOPE_MARK: &str = "_A_";

/// The longest app name.
pub const MAX_APP_NAME_LEN: usize = 63;

/// Checks an app name: 1 to 63 lower-case letters, digits, `-` or `_`, starting with a letter or
/// digit.
pub fn check_app_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_APP_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(format!(
            "name `{name}` must be 1 to 63 lower-case letters, digits, `-` or `_`, starting with a letter or digit"
        ))
    }
}

/// The storage name of `name` in `app` (both already validated as lower-case names).
pub fn scoped_name(app: &str, name: &str) -> String {
    format!("{app}{SCOPE_MARK}{name}")
}

/// The app and the name of a storage name; `None` for a name stored without an app (the layout
/// before names were scoped).
pub fn split_scoped(stored: &str) -> Option<(&str, &str)> {
    let mark = stored.find(|c: char| c.is_ascii_uppercase())?;
    let app = stored.get(..mark.checked_sub(1)?)?;
    let name = stored.get(mark - 1..)?.strip_prefix(SCOPE_MARK)?;
    Some((app, name))
}

/// The owner and the name of a bucket or topic that `app` names: its own (`carts` is
/// `(app, "carts")`) or one another app exports to it (`shop/carts` is `("shop", "carts")`).
pub fn resolve<'a>(app: &'a str, named: &'a str) -> (&'a str, &'a str) {
    named.split_once('/').unwrap_or((app, named))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scoped_names_never_collide() {
        assert_ne!(scoped_name("a_b", "c"), scoped_name("a", "b_c"));
        assert_ne!(scoped_name("a-b", "c"), scoped_name("a", "b-c"));
        assert_ne!(scoped_name("a_", "c"), scoped_name("a", "_c"));
        for (app, name) in [("a_b", "c"), ("a", "b_c"), ("shop", "orders.dlq"), ("x_", "_y")] {
            assert_eq!(split_scoped(&scoped_name(app, name)), Some((app, name)), "{app} {name}");
        }
        assert_eq!(split_scoped("carts"), None, "the old layout has no app");
        assert_eq!(split_scoped("A_x"), None);
    }

    #[test]
    fn app_names() {
        assert!(check_app_name("shop-1_a").is_ok());
        for bad in ["", "Shop", "-a", "a.b", &"a".repeat(64)] {
            assert!(check_app_name(bad).is_err(), "{bad}");
        }
    }
}
