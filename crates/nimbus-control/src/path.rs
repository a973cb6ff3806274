//! Path segments of the URLs the platform builds from names (actor keys, run ids, app and
//! bucket names): percent-encoded so that a `/`, `?` or `%` in a name stays part of its segment.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Everything but the unreserved characters of RFC 3986.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// `name` as one path segment: `a/b c` is `a%2Fb%20c`.
pub fn path_segment(name: &str) -> String {
    utf8_percent_encode(name, SEGMENT).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_unreserved_characters_stay_as_they_are() {
        assert_eq!(super::path_segment("a-b.c_d~e"), "a-b.c_d~e");
        assert_eq!(super::path_segment("user/42?x=%"), "user%2F42%3Fx%3D%25");
        assert_eq!(super::path_segment("é"), "%C3%A9");
    }
}
