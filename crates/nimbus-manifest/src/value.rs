//! Typed values written as strings in `nimbus.toml` (routes, HTTP methods, outbound grants, cron
//! schedules, time zones): each deserializes straight into its type, so a manifest that parses
//! holds only well-formed values and nothing downstream parses them again.
//!
//! A value that does not parse fails deserialization with its own message and hint; the hint
//! and the text at fault travel inside the serde error (after [`HELP`] and [`TEXT`]) and
//! [`ValueError::split`] takes them out again for the diagnostic.

/// Separates a value's error message from its hint inside a serde error message.
const HELP: &str = "\n  = help: ";
/// Separates the hint from the text that did not parse.
const TEXT: &str = "\n  = text: ";

/// `message`, `hint` and the text at fault, as one serde error message.
pub(crate) fn with_hint(message: String, hint: &str, text: &str) -> String {
    format!("{message}{HELP}{hint}{TEXT}{text}")
}

/// A serde error message taken apart again.
pub(crate) struct ValueError<'a> {
    /// What is wrong.
    pub message: &'a str,
    /// What to do about it and the text at fault, if the error came from a typed value.
    pub value: Option<(&'a str, &'a str)>,
}

impl<'a> ValueError<'a> {
    /// Splits a serde error message made by [`with_hint`]; any other is all message.
    pub fn split(message: &'a str) -> Self {
        let value = message.split_once(HELP).and_then(|(m, rest)| Some((m, rest.split_once(TEXT)?)));
        match value {
            Some((message, (hint, text))) => Self { message, value: Some((hint, text)) },
            None => Self { message, value: None },
        }
    }
}

/// Serde glue for a type written as a string: `TryFrom<String>` through `$ty::parse` (the error
/// carrying `$hint`) and back to the text it was written as through `$text`.
macro_rules! string_value {
    ($ty:ty, $hint:expr, $text:expr) => {
        impl TryFrom<String> for $ty {
            type Error = String;
            fn try_from(text: String) -> Result<Self, String> {
                Self::parse(&text).map_err(|e| crate::value::with_hint(e, $hint, &text))
            }
        }

        impl From<$ty> for String {
            fn from(value: $ty) -> String {
                let text: fn(&$ty) -> String = $text;
                text(&value)
            }
        }
    };
}
pub(crate) use string_value;
