//! How an error reaches a person: its message followed by each of its causes.
//!
//! Library errors in Nimbus say what failed in their message and keep what caused it as their
//! `source()`, typed, rather than copying its text. Whatever shows an error to a user or writes
//! it to a log renders the whole chain with [`report`], as `anyhow`'s `{:#}` does in the CLI.
use std::error::Error;

/// A cause kept as a library error's `source()`: any error, shared so that the error stays
/// cheap to clone when one failure answers several callers.
pub type Cause = std::sync::Arc<dyn Error + Send + Sync + 'static>;

/// Wraps an error (or an already boxed one, as `async-nats` returns) as a [`Cause`].
pub fn cause(error: impl Into<Box<dyn Error + Send + Sync + 'static>>) -> Cause {
    Cause::from(error.into())
}

/// `error`'s message and the message of each of its causes, joined by `: `. A cause whose
/// message its parent already ends with (an error that also prints its source) is not repeated.
pub fn report(error: &(dyn Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !text.is_empty() && !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot open the event store")]
    struct Open(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("deploy failed: {0}")]
    struct Echoes(#[source] std::io::Error);

    #[test]
    fn every_cause_is_shown_once() {
        let io = || std::io::Error::other("disk full");
        assert_eq!(report(&Open(io())), "cannot open the event store: disk full");
        assert_eq!(report(&Echoes(io())), "deploy failed: disk full");
        assert_eq!(report(&io()), "disk full");
        let shared: Cause = cause(Open(io()));
        assert_eq!(report(&*shared), "cannot open the event store: disk full");
    }
}
