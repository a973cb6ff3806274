//! Maps a field path (`component.hello.limits.memory_mb`) to a line and column of the manifest's
//! text and back, so every error can point at the exact place to fix.
use std::fmt;
use std::ops::Range;

use toml_edit::{Document, Item, Table, Value};

/// A path to a field in the manifest, e.g. `trigger.http[1].route`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldPath(Vec<Segment>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

impl FieldPath {
    /// The empty path: the document itself.
    pub fn root() -> Self {
        Self::default()
    }

    /// This path extended by a table key.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.0.push(Segment::Key(key.into()));
        self
    }

    /// This path extended by an array index.
    pub fn index(mut self, index: usize) -> Self {
        self.0.push(Segment::Index(index));
        self
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(document)");
        }
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Segment::Key(k) if i == 0 => write!(f, "{k}")?,
                Segment::Key(k) => write!(f, ".{k}")?,
                Segment::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum Node<'a> {
    Item(&'a Item),
    Table(&'a Table),
    Value(&'a Value),
}

impl<'a> Node<'a> {
    fn span(self) -> Option<Range<usize>> {
        match self {
            Node::Item(i) => i.span(),
            Node::Table(t) => t.span(),
            Node::Value(v) => v.span(),
        }
    }

    fn get(self, key: &str) -> Option<(Option<Range<usize>>, Node<'a>)> {
        let (k, item) = match self {
            Node::Item(i) => i.as_table_like()?.get_key_value(key)?,
            Node::Table(t) => t.get_key_value(key)?,
            Node::Value(Value::InlineTable(t)) => t.get_key_value(key)?,
            Node::Value(_) => return None,
        };
        Some((k.span(), Node::Item(item)))
    }

    fn index(self, index: usize) -> Option<Node<'a>> {
        match self {
            Node::Item(Item::ArrayOfTables(a)) => a.get(index).map(Node::Table),
            Node::Item(Item::Value(Value::Array(a))) | Node::Value(Value::Array(a)) => a.get(index).map(Node::Value),
            _ => None,
        }
    }

    fn children(self) -> Vec<(Segment, Option<Range<usize>>, Node<'a>)> {
        let table: Option<&dyn toml_edit::TableLike> = match self {
            Node::Item(i) => i.as_table_like(),
            Node::Table(t) => Some(t),
            Node::Value(Value::InlineTable(t)) => Some(t),
            Node::Value(_) => None,
        };
        if let Some(t) = table {
            return t
                .iter()
                .filter_map(|(k, _)| {
                    let (span, node) = self.get(k)?;
                    Some((Segment::Key(k.to_string()), span, node))
                })
                .collect();
        }
        (0..).map_while(|i| self.index(i).map(|n| (Segment::Index(i), None, n))).collect()
    }
}

/// Byte range of the field at `path` (its key where there is one), or of its nearest ancestor.
pub(crate) fn span_of(doc: &Document<String>, path: &FieldPath) -> Option<Range<usize>> {
    let mut node = Node::Item(doc.as_item());
    let mut best = None;
    for seg in &path.0 {
        let (key_span, next) = match seg {
            Segment::Key(k) => match node.get(k) {
                Some(found) => found,
                None => break,
            },
            Segment::Index(i) => match node.index(*i) {
                Some(n) => (None, n),
                None => break,
            },
        };
        best = key_span.or_else(|| next.span()).or(best);
        node = next;
    }
    best
}

/// The element of the array at `path` whose string value is `text`, with the byte where it
/// starts: serde points at a whole array when one of its elements is malformed.
pub(crate) fn element_with(doc: &Document<String>, path: &FieldPath, text: &str) -> Option<(FieldPath, usize)> {
    let mut node = Node::Item(doc.as_item());
    for seg in &path.0 {
        node = match seg {
            Segment::Key(k) => node.get(k)?.1,
            Segment::Index(i) => node.index(*i)?,
        };
    }
    (0..).map_while(|i| node.index(i).map(|n| (i, n))).find_map(|(i, n)| match n {
        Node::Value(v) if v.as_str() == Some(text) => Some((path.clone().index(i), v.span()?.start)),
        _ => None,
    })
}

/// The deepest field whose text contains byte `offset`.
pub(crate) fn path_at(doc: &Document<String>, offset: usize) -> FieldPath {
    let mut path = FieldPath::root();
    let mut node = Node::Item(doc.as_item());
    'descend: loop {
        for (seg, key_span, child) in node.children() {
            let region = union(key_span, region(child));
            if region.is_some_and(|r| r.start <= offset && offset <= r.end) {
                path.0.push(seg);
                node = child;
                continue 'descend;
            }
        }
        return path;
    }
}

/// The text a node covers: its own span (a table's header) joined with all of its children's.
fn region(node: Node<'_>) -> Option<Range<usize>> {
    node.children()
        .into_iter()
        .fold(node.span(), |acc, (_, key_span, child)| union(union(acc, key_span), region(child)))
}

fn union(a: Option<Range<usize>>, b: Option<Range<usize>>) -> Option<Range<usize>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.start.min(b.start)..a.end.max(b.end)),
        (a, b) => a.or(b),
    }
}

/// 1-based line and column of byte `offset` in `text`.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
    (line, col)
}
