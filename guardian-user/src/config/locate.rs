//! Where in the TOML text an error is: the 1-based line and the dotted key (`tasks.ghosts.grace`,
//! `workspaces.1.path`), for TOML syntax errors, serde type errors and validation errors alike.
//! Works on text only; a wrong guess names a nearby key, never panics.

use toml_edit::{Item, TableLike, Value};

/// 1-based line number of byte offset `offset` in `text`.
pub(super) fn line_of(text: &str, offset: usize) -> usize {
    let end = floor_char_boundary(text, offset.min(text.len()));
    text.get(..end).map_or(0, |t| t.matches('\n').count()) + 1
}

/// The largest char boundary at or below `i`.
fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// (line, key) of an error the TOML parser or serde reported at `offset` with `message`.
pub(super) fn locate_error(
    text: &str,
    offset: Option<usize>,
    message: &str,
) -> (Option<usize>, Option<String>) {
    let Some(offset) = offset else {
        // No span (e.g. "recursion limit"): the most deeply nested line is the culprit.
        let line = deepest_line(text);
        let key = line.and_then(|l| key_at_line(text, l));
        return (line, key.map(tidy_key));
    };
    let line = line_of(text, offset);
    let mut key = key_at_offset(text, offset)
        .or_else(|| key_at_line(text, line))
        .or_else(|| unknown_field(message));
    if let Some(field) = missing_field(message) {
        key = Some(match key {
            Some(table) if !table.ends_with(&format!(".{field}")) && table != field => {
                format!("{table}.{field}")
            }
            Some(same) => same,
            None => field,
        });
    }
    (Some(line), key.map(tidy_key))
}

/// The longest key an error message shows.
const MAX_KEY_CHARS: usize = 200;

/// A key as a message may show it: control characters escaped, at most [`MAX_KEY_CHARS`].
fn tidy_key(key: String) -> String {
    let escaped = crate::textpath::escape_bytes(key.as_bytes());
    if escaped.chars().count() <= MAX_KEY_CHARS {
        return escaped;
    }
    let mut short: String = escaped.chars().take(MAX_KEY_CHARS).collect();
    short.push('…');
    short
}

/// The dotted key whose key or value spans `offset`, from a span-keeping parse of `text`
/// (`None` when `text` does not parse).
fn key_at_offset(text: &str, offset: usize) -> Option<String> {
    let doc = toml_edit::Document::parse(text).ok()?;
    let mut path = Vec::new();
    find_in_table(doc.as_table(), offset, &mut path).then(|| path.join("."))
}

fn spans(span: Option<std::ops::Range<usize>>, offset: usize) -> bool {
    span.is_some_and(|s| s.contains(&offset) || s.start == offset)
}

/// Pushes onto `path` the keys leading to `offset` inside `table`; true when found.
fn find_in_table(table: &dyn TableLike, offset: usize, path: &mut Vec<String>) -> bool {
    for (name, _) in table.iter() {
        let Some((key, item)) = table.get_key_value(name) else {
            continue;
        };
        path.push(name.to_string());
        if find_in_item(item, offset, path) || spans(key.span(), offset) {
            return true;
        }
        path.pop();
    }
    false
}

fn find_in_item(item: &Item, offset: usize, path: &mut Vec<String>) -> bool {
    match item {
        Item::None => false,
        Item::Value(value) => find_in_value(value, offset, path),
        Item::Table(table) => find_in_table(table, offset, path) || spans(table.span(), offset),
        Item::ArrayOfTables(array) => {
            for (i, table) in array.iter().enumerate() {
                path.push(i.to_string());
                if find_in_table(table, offset, path) || spans(table.span(), offset) {
                    return true;
                }
                path.pop();
            }
            false
        }
    }
}

fn find_in_value(value: &Value, offset: usize, path: &mut Vec<String>) -> bool {
    match value {
        Value::Array(array) => {
            for (i, element) in array.iter().enumerate() {
                path.push(i.to_string());
                if find_in_value(element, offset, path) {
                    return true;
                }
                path.pop();
            }
            spans(array.span(), offset)
        }
        Value::InlineTable(table) => {
            find_in_table(table, offset, path) || spans(table.span(), offset)
        }
        other => spans(other.span(), offset),
    }
}

/// A table header line's dotted name: `[tasks.ghosts]` → `tasks.ghosts`; `[[rules]]` → the name
/// and whether it is an array of tables.
fn header_name(line: &str) -> Option<(String, bool)> {
    let line = line.split('#').next()?.trim();
    let (inner, array) =
        if let Some(inner) = line.strip_prefix("[[").and_then(|l| l.strip_suffix("]]")) {
            (inner, true)
        } else {
            (line.strip_prefix('[')?.strip_suffix(']')?, false)
        };
    let name = inner
        .split('.')
        .map(|part| part.trim().trim_matches(|c| c == '"' || c == '\''))
        .collect::<Vec<_>>()
        .join(".");
    (!name.is_empty()).then_some((name, array))
}

/// The dotted key defined on `line` (1-based), with the table header it sits under; for a
/// header line, the table itself (`rules.1` for the second `[[rules]]`).
pub(super) fn key_at_line(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let index = line.checked_sub(1)?;
    let this = lines.get(index)?;
    let before = lines.get(..index)?;
    // The table a line belongs to: the nearest header above it, indexed when repeated.
    let table_of = |header_line: &str, before: &[&str]| -> Option<String> {
        let (name, array) = header_name(header_line)?;
        if !array {
            return Some(name);
        }
        let index = before
            .iter()
            .filter(|l| header_name(l).is_some_and(|(n, a)| a && n == name))
            .count();
        Some(format!("{name}.{index}"))
    };
    if this.trim_start().starts_with('[') {
        if let Some(table) = table_of(this, before) {
            return Some(table);
        }
    }
    let (key, _) = this.split_once('=')?;
    let key = key
        .split('.')
        .map(|part| part.trim().trim_matches(|c| c == '"' || c == '\''))
        .collect::<Vec<_>>()
        .join(".");
    if key.is_empty() || key.starts_with('[') || key.starts_with('#') {
        return None;
    }
    let header = before
        .iter()
        .enumerate()
        .rev()
        .find(|(_, l)| l.trim_start().starts_with('[') && header_name(l).is_some());
    let table = header.and_then(|(i, l)| table_of(l, before.get(..i).unwrap_or_default()));
    Some(match table {
        Some(t) => format!("{t}.{key}"),
        None => key,
    })
}

/// The line with the most nesting characters, where an error without a position is likeliest.
fn deepest_line(text: &str) -> Option<usize> {
    let nesting = |l: &str| l.chars().filter(|c| matches!(c, '.' | '[' | '{')).count();
    text.lines()
        .enumerate()
        .max_by_key(|(i, l)| (nesting(l), std::cmp::Reverse(*i)))
        .map(|(i, _)| i + 1)
}

/// The field name in serde's "unknown field `x`" message.
fn unknown_field(message: &str) -> Option<String> {
    let rest = message.split("unknown field `").nth(1)?;
    Some(rest.split('`').next()?.to_string())
}

/// The field name in serde's "missing field `x`" message.
fn missing_field(message: &str) -> Option<String> {
    let rest = message.split("missing field `").nth(1)?;
    Some(rest.split('`').next()?.to_string())
}

/// Line of the value at `path` (table keys and array indices) in the TOML text; the nearest
/// enclosing key or table when the key itself is absent (a default at fault).
pub(super) fn locate_key(text: &str, path: &[String]) -> Option<usize> {
    let doc = toml_edit::Document::parse(text).ok()?;
    let mut item: &Item = doc.as_item();
    let mut span = None;
    let mut parts = path.iter();
    while let Some(part) = parts.next() {
        let next = match item {
            Item::Table(t) => t.get_key_value(part).map(|(k, v)| (k.span(), v)),
            Item::Value(Value::InlineTable(t)) => t.get_key_value(part).map(|(k, v)| (k.span(), v)),
            Item::ArrayOfTables(array) => {
                let Some(element) = part.parse::<usize>().ok().and_then(|i| array.get(i)) else {
                    break;
                };
                span = element.span().or(span);
                // Continue below the element: re-enter the loop with the next part.
                let Some(field) = parts.next() else {
                    break;
                };
                element.get_key_value(field).map(|(k, v)| (k.span(), v))
            }
            Item::Value(Value::Array(array)) => {
                let Some(element) = part.parse::<usize>().ok().and_then(|i| array.get(i)) else {
                    break;
                };
                span = element.span().or(span);
                match element {
                    Value::InlineTable(t) => {
                        let Some(field) = parts.next() else {
                            break;
                        };
                        t.get_key_value(field).map(|(k, v)| (k.span(), v))
                    }
                    _ => break,
                }
            }
            _ => break,
        };
        let Some((key_span, value)) = next else {
            break;
        };
        span = key_span.or(value.span()).or(span);
        item = value;
    }
    span.map(|s| line_of(text, s.start))
}

/// True when `path` (table keys) is present in the TOML text, however it is spelled
/// (`[a.b]`, `a.b.c = …`, `a = { b = … }`).
pub(super) fn is_present(text: &str, path: &[&str]) -> bool {
    let Ok(doc) = toml_edit::Document::parse(text) else {
        return false;
    };
    let mut item: &Item = doc.as_item();
    for part in path {
        let next = match item {
            Item::Table(t) => t.get(part),
            Item::Value(Value::InlineTable(t)) => t.get_key_value(part).map(|(_, v)| v),
            _ => None,
        };
        match next {
            Some(n) => item = n,
            None => return false,
        }
    }
    true
}
