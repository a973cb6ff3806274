//! PEP 440 versions (Python's): `[N!]N(.N)*[{a|b|rc}N][.postN][.devN][+local]`, with the
//! spellings PEP 440 normalizes (`alpha`, `beta`, `c`, `pre`, `preview`, `rev`, `r`, `1.0-1`,
//! `-`/`_`/`.` separators, any case, a leading `v`) and its ordering: `1.0.dev0 < 1.0a1 <
//! 1.0rc1 < 1.0 < 1.0.post1`, trailing zeros insignificant (`1.0 == 1.0.0`).
use std::cmp::Ordering;
use std::str::FromStr;

/// A parsed PEP 440 version.
#[derive(Debug, Clone)]
pub(crate) struct Pep440 {
    epoch: u64,
    release: Vec<u64>,
    pre: Option<(Phase, u64)>,
    post: Option<u64>,
    dev: Option<u64>,
    local: Vec<Local>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Alpha,
    Beta,
    Rc,
}

/// A local version label's segment: numbers sort after words.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Local {
    Word(String),
    Number(u64),
}

impl Pep440 {
    /// The tuple PEP 440 orders by (as `packaging` does).
    fn key(&self) -> impl Ord + '_ {
        let significant = self.release.iter().rposition(|&n| n != 0).map_or(0, |i| i + 1);
        let pre = match (self.pre, self.post, self.dev) {
            (Some(pre), _, _) => (1, Some(pre)),
            // A development release of the final version sorts before its prereleases.
            (None, None, Some(_)) => (0, None),
            (None, _, _) => (2, None),
        };
        let dev = (self.dev.is_none(), self.dev);
        (self.epoch, &self.release[..significant], pre, self.post, dev, &self.local)
    }
}

impl Ord for Pep440 {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

impl PartialOrd for Pep440 {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Pep440 {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Pep440 {}

impl FromStr for Pep440 {
    type Err = String;

    fn from_str(version: &str) -> Result<Self, String> {
        let invalid = || format!("`{version}` is not a PEP 440 version");
        let lower = version.trim().to_ascii_lowercase();
        let text = lower.strip_prefix('v').unwrap_or(&lower);
        let (public, local) = text.split_once('+').map_or((text, None), |(p, l)| (p, Some(l)));
        let (epoch, public) = match public.split_once('!') {
            Some((epoch, rest)) => (epoch.parse().map_err(|_| invalid())?, rest),
            None => (0, public),
        };
        let mut c = Cursor { s: public.as_bytes(), pos: 0 };
        let mut release = vec![c.number().ok_or_else(invalid)?];
        while let Some(n) = c.attempt(|c| c.eat(b".").then(|| c.number()).flatten()) {
            release.push(n);
        }
        let pre = c.attempt(|c| {
            c.separator();
            let phase = c.word(&[
                ("alpha", Phase::Alpha),
                ("a", Phase::Alpha),
                ("beta", Phase::Beta),
                ("b", Phase::Beta),
                ("preview", Phase::Rc),
                ("pre", Phase::Rc),
                ("rc", Phase::Rc),
                ("c", Phase::Rc),
            ])?;
            Some((phase, c.optional_number()))
        });
        let post = c.attempt(|c| c.eat(b"-").then(|| c.number()).flatten()).or_else(|| {
            c.attempt(|c| {
                c.separator();
                c.word(&[("post", ()), ("rev", ()), ("r", ())])?;
                Some(c.optional_number())
            })
        });
        let dev = c.attempt(|c| {
            c.separator();
            c.word(&[("dev", ())])?;
            Some(c.optional_number())
        });
        if c.pos != c.s.len() {
            return Err(invalid());
        }
        let local = match local {
            Some(label) => {
                label.split(['.', '-', '_']).map(local_segment).collect::<Option<_>>().ok_or_else(invalid)?
            }
            None => Vec::new(),
        };
        Ok(Self { epoch, release, pre, post, dev, local })
    }
}

fn local_segment(segment: &str) -> Option<Local> {
    if segment.is_empty() || !segment.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    Some(segment.parse().map_or_else(|_| Local::Word(segment.to_owned()), Local::Number))
}

/// A position in the version being parsed.
struct Cursor<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    /// Runs `f`, and puts the position back where it was if `f` finds nothing.
    fn attempt<T>(&mut self, f: impl FnOnce(&mut Self) -> Option<T>) -> Option<T> {
        let start = self.pos;
        let found = f(self);
        if found.is_none() {
            self.pos = start;
        }
        found
    }

    fn eat(&mut self, text: &[u8]) -> bool {
        let matched = self.s[self.pos..].starts_with(text);
        if matched {
            self.pos += text.len();
        }
        matched
    }

    /// An optional `-`, `_` or `.`.
    fn separator(&mut self) {
        let _ = self.eat(b"-") || self.eat(b"_") || self.eat(b".");
    }

    fn word<T: Copy>(&mut self, words: &[(&str, T)]) -> Option<T> {
        words.iter().find(|(word, _)| self.eat(word.as_bytes())).map(|&(_, value)| value)
    }

    fn number(&mut self) -> Option<u64> {
        let digits = self.s[self.pos..].iter().take_while(|b| b.is_ascii_digit()).count();
        let text = std::str::from_utf8(&self.s[self.pos..self.pos + digits]).ok()?;
        let value = text.parse().ok()?;
        self.pos += digits;
        Some(value)
    }

    /// A number after an optional separator, zero when there is none (`1.0a` is `1.0a0`).
    fn optional_number(&mut self) -> u64 {
        self.attempt(|c| {
            c.separator();
            c.number()
        })
        .unwrap_or(0)
    }
}
