//! Decoding task DB rows: any SQLite value (NULL, integer, real, text of any bytes, blob) in any
//! column gives a value or an "unreadable" marker saying what was there — never a panic, a wrap
//! or a lossy guess. Pure: the DB module hands in the cells of a row.
//!
//! Text is read as bytes (SQLite does not check that TEXT is UTF-8, and rusqlite's own `Value`
//! conversion panics on bytes that are not); what is shown goes through `textpath`.

use super::clock;
use crate::config::NaiveTimes;
use crate::textpath;
use rusqlite::types::{ToSql, ToSqlOutput, ValueRef};
use serde::Serialize;
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path};

/// Longest text shown of one value in messages; longer values are cut, with their length.
const SHOWN_MAX: usize = 120;
/// Longest project or session name Guardian matches against a dir name (a file name is at most
/// 255 bytes; a longer value cannot name one).
const NAME_MAX: usize = 4096;

/// One SQLite value, owned, exactly as stored (text as its bytes).
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    Null,
    Integer(i64),
    Real(f64),
    Text(Vec<u8>),
    Blob(Vec<u8>),
}

impl From<ValueRef<'_>> for Cell {
    fn from(v: ValueRef<'_>) -> Cell {
        match v {
            ValueRef::Null => Cell::Null,
            ValueRef::Integer(n) => Cell::Integer(n),
            ValueRef::Real(f) => Cell::Real(f),
            ValueRef::Text(t) => Cell::Text(t.to_vec()),
            ValueRef::Blob(b) => Cell::Blob(b.to_vec()),
        }
    }
}

impl ToSql for Cell {
    /// Binds the value back with the storage class and bytes it was read with.
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Cell::Null => ValueRef::Null,
            Cell::Integer(n) => ValueRef::Integer(*n),
            Cell::Real(f) => ValueRef::Real(*f),
            Cell::Text(t) => ValueRef::Text(t),
            Cell::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

impl Cell {
    /// The storage class, as SQLite names it.
    pub fn kind(&self) -> &'static str {
        match self {
            Cell::Null => "NULL",
            Cell::Integer(_) => "integer",
            Cell::Real(_) => "real",
            Cell::Text(_) => "text",
            Cell::Blob(_) => "blob",
        }
    }

    /// The value's bytes as a name: text and blob bytes as they are, numbers as written.
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            Cell::Null => Vec::new(),
            Cell::Integer(n) => n.to_string().into_bytes(),
            Cell::Real(f) => f.to_string().into_bytes(),
            Cell::Text(t) | Cell::Blob(t) => t.clone(),
        }
    }

    /// The value for messages: escaped (any bytes survive), cut after [`SHOWN_MAX`] characters.
    pub fn shown(&self) -> String {
        match self {
            Cell::Null => "NULL".into(),
            Cell::Blob(b) => format!("blob of {} bytes", b.len()),
            other => shown_bytes(&other.bytes()),
        }
    }

    /// Whether the value is NULL or text of only whitespace.
    pub fn is_blank(&self) -> bool {
        match self {
            Cell::Null => true,
            Cell::Text(t) => t.iter().all(u8::is_ascii_whitespace),
            _ => false,
        }
    }
}

/// Bytes for messages: escaped, cut after [`SHOWN_MAX`] characters with the full length.
pub fn shown_bytes(bytes: &[u8]) -> String {
    let text = textpath::escape_bytes(bytes);
    match text.char_indices().nth(SHOWN_MAX) {
        Some((cut, _)) => format!("{}… ({} bytes)", &text[..cut], bytes.len()),
        None => text,
    }
}

/// A timestamp column: seconds since the epoch, or `None` when the value is no timestamp
/// Guardian can read (unix seconds or milliseconds as numbers or digits, RFC 3339 / ISO-8601 /
/// SQLite text; years 1970 to 9999).
pub fn time(cell: &Cell, naive: NaiveTimes) -> Option<i64> {
    match cell {
        Cell::Integer(n) => clock::from_integer(*n),
        Cell::Real(f) => clock::from_number(*f),
        Cell::Text(t) => clock::parse_timestamp(std::str::from_utf8(t).ok()?, naive),
        Cell::Null | Cell::Blob(_) => None,
    }
}

/// A task's recorded process id, as far as it can be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pid {
    /// NULL or empty text: no pid recorded.
    Missing,
    /// A positive process id.
    Valid(i32),
    /// Something else; the text says what.
    Unreadable(String),
}

impl Pid {
    pub fn valid(&self) -> Option<i32> {
        match self {
            Pid::Valid(p) => Some(*p),
            _ => None,
        }
    }
}

/// The `pid` column: a positive process id in an integer, an integral real or decimal text.
pub fn pid(cell: &Cell) -> Pid {
    let whole = |n: i64| match i32::try_from(n) {
        Ok(p) if p > 0 => Pid::Valid(p),
        _ => Pid::Unreadable(format!("pid {n} is not a process id (1 to {})", i32::MAX)),
    };
    match cell {
        c if c.is_blank() => Pid::Missing,
        Cell::Integer(n) => whole(*n),
        Cell::Real(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e18 => {
            // Integral and well inside i64: the conversion is exact.
            whole(*f as i64)
        }
        Cell::Text(t) => match std::str::from_utf8(t).ok().map(str::trim) {
            Some(s) if s.len() <= 20 => match s.parse::<i64>() {
                Ok(n) => whole(n),
                Err(_) => Pid::Unreadable(format!("pid `{}` is not a number", cell.shown())),
            },
            _ => Pid::Unreadable(format!("pid `{}` is not a number", cell.shown())),
        },
        other => Pid::Unreadable(format!(
            "pid is {} `{}`, not a process id",
            other.kind(),
            other.shown()
        )),
    }
}

/// A task's `project`: the child of a workspace it names, or why it names none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Project {
    /// The dir name (the first component of the project value).
    Dir(OsString),
    /// No dir can be told from the value; the text says why.
    Unreadable(String),
}

/// The `project` column: its first path component names a child of the workspaces
/// (`alpha` → `alpha`, `org/repo` → `org`). NULL, blank, absolute, `.`/`..` or over-long values
/// name no dir.
pub fn project(cell: &Cell) -> Project {
    let bytes = match cell {
        Cell::Null => return Project::Unreadable("project is NULL".into()),
        c if c.is_blank() => return Project::Unreadable("project is empty".into()),
        Cell::Real(_) => {
            return Project::Unreadable(format!("project is a real number `{}`", cell.shown()))
        }
        other => other.bytes(),
    };
    if bytes.len() > NAME_MAX {
        return Project::Unreadable(format!(
            "project is {} bytes long: no dir has such a name",
            bytes.len()
        ));
    }
    let trimmed = trim_ascii(&bytes);
    if trimmed.contains(&0) {
        return Project::Unreadable(format!(
            "project `{}` holds a NUL byte",
            shown_bytes(&bytes)
        ));
    }
    match Path::new(OsStr::from_bytes(trimmed)).components().next() {
        Some(Component::Normal(n)) => Project::Dir(n.to_os_string()),
        _ => Project::Unreadable(format!(
            "project `{}` names no dir below a workspace (absolute, `.` or `..`)",
            shown_bytes(&bytes)
        )),
    }
}

/// A session name (`activity_sql`'s `name`): the dir name it is, byte for byte.
pub fn name(cell: &Cell) -> Option<OsString> {
    match cell {
        Cell::Null | Cell::Real(_) => None,
        c if c.is_blank() => None,
        other => {
            let b = other.bytes();
            (b.len() <= NAME_MAX && !b.contains(&b'/') && !b.contains(&0))
                .then(|| OsString::from_vec(b))
        }
    }
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    b.get(start..end).unwrap_or_default()
}

/// One running task, as the running-tasks query returned it. Every field is readable whatever
/// the row held: values that mean nothing say so.
#[derive(Clone, Debug, Serialize)]
pub struct RunningTask {
    /// The `id` column as shown text.
    pub id: String,
    /// The `id` value exactly as stored, bound back as `:id`.
    #[serde(skip)]
    pub id_value: Cell,
    /// The `project` column as shown text.
    pub project: String,
    /// The `project` value exactly as stored, bound back as `:project`.
    #[serde(skip)]
    pub project_value: Cell,
    /// The workspace child the project names, or why it names none.
    #[serde(skip)]
    pub dir: Project,
    /// The `node` column as shown text when the query returns one that is not NULL.
    pub node: Option<String>,
    #[serde(skip)]
    pub node_value: Option<Cell>,
    /// `started_at` as shown text.
    pub started_raw: String,
    /// `started_at` exactly as stored, bound back as `:started_at`.
    #[serde(skip)]
    pub started_value: Cell,
    /// `started_at` in seconds since the epoch, when it could be read.
    pub started_at: Option<i64>,
    /// The recorded process id, when it is one.
    pub pid: Option<i32>,
    /// Why the `pid` value is no process id, when it is not (NULL is no problem: no pid).
    pub pid_problem: Option<String>,
}

impl RunningTask {
    /// Whether the row's `node` value is `node` (byte for byte; a missing column is no node).
    pub fn node_is(&self, node: &str) -> bool {
        self.node_value
            .as_ref()
            .is_some_and(|v| v.bytes() == node.as_bytes())
    }

    /// The workspace child this task's project names.
    pub fn dir_name(&self) -> Option<&OsString> {
        match &self.dir {
            Project::Dir(d) => Some(d),
            Project::Unreadable(_) => None,
        }
    }
}

/// Pure: one row of `running_sql`, from its cells (`node` when the query returns the column).
pub fn decode_running(
    id: Cell,
    project: Cell,
    started: Cell,
    pid: Cell,
    node: Option<Cell>,
    naive: NaiveTimes,
) -> RunningTask {
    let (pid, pid_problem) = match self::pid(&pid) {
        Pid::Valid(p) => (Some(p), None),
        Pid::Missing => (None, None),
        Pid::Unreadable(why) => (None, Some(why)),
    };
    let node_value = node.filter(|n| *n != Cell::Null);
    RunningTask {
        id: id.shown(),
        id_value: id,
        project: project.shown(),
        dir: self::project(&project),
        project_value: project,
        node: node_value.as_ref().map(Cell::shown),
        node_value,
        started_raw: started.shown(),
        started_at: time(&started, naive),
        started_value: started,
        pid,
        pid_problem,
    }
}

/// Last activity of scratch sessions as `activity_sql` returned it.
#[derive(Clone, Debug, Default)]
pub struct Activity {
    /// Newest `last_active` per session name (the dir name, byte for byte).
    pub last: HashMap<OsString, i64>,
    /// Sessions with a row whose `last_active` could not be read, with the value shown.
    pub unreadable: HashMap<OsString, String>,
    /// Rows whose `name` names no dir.
    pub nameless_rows: usize,
}

/// Pure: folds one `activity_sql` row into `into`.
pub fn decode_activity(name: &Cell, last_active: &Cell, naive: NaiveTimes, into: &mut Activity) {
    let Some(n) = self::name(name) else {
        into.nameless_rows += 1;
        return;
    };
    match time(last_active, naive) {
        Some(t) => {
            let e = into.last.entry(n).or_insert(t);
            *e = (*e).max(t);
        }
        None => {
            into.unreadable.insert(n, last_active.shown());
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn pids_are_positive_i32_or_say_why_not() {
        assert_eq!(pid(&Cell::Integer(4242)), Pid::Valid(4242));
        assert_eq!(pid(&Cell::Real(4242.0)), Pid::Valid(4242));
        assert_eq!(pid(&Cell::Text(b" 4242 ".to_vec())), Pid::Valid(4242));
        assert_eq!(pid(&Cell::Null), Pid::Missing);
        assert_eq!(pid(&Cell::Text(b"  ".to_vec())), Pid::Missing);
        for bad in [
            Cell::Integer(1 << 40),
            Cell::Integer(-5),
            Cell::Integer(0),
            Cell::Integer(i64::MIN),
            Cell::Real(f64::NAN),
            Cell::Real(1e300),
            Cell::Real(12.5),
            Cell::Text(b"12abc".to_vec()),
            Cell::Text(vec![0xff, 0xfe]),
            Cell::Text(b"99999999999999999999999".to_vec()),
            Cell::Blob(vec![1, 2, 3]),
        ] {
            assert!(matches!(pid(&bad), Pid::Unreadable(_)), "{bad:?}");
        }
    }

    #[test]
    fn projects_name_a_dir_or_say_why_not() {
        let dir = |s: &[u8]| Project::Dir(OsString::from_vec(s.to_vec()));
        assert_eq!(project(&Cell::Text(b"alpha".to_vec())), dir(b"alpha"));
        assert_eq!(project(&Cell::Text(b" org/repo ".to_vec())), dir(b"org"));
        assert_eq!(project(&Cell::Text(b"bad\xff".to_vec())), dir(b"bad\xff"));
        assert_eq!(project(&Cell::Blob(b"blobby".to_vec())), dir(b"blobby"));
        assert_eq!(project(&Cell::Integer(42)), dir(b"42"));
        for bad in [
            Cell::Null,
            Cell::Text(Vec::new()),
            Cell::Text(b"/etc".to_vec()),
            Cell::Text(b"..".to_vec()),
            Cell::Text(b"./x".to_vec()),
            Cell::Text(b"a\0b".to_vec()),
            Cell::Text(vec![b'x'; NAME_MAX + 1]),
            Cell::Real(f64::NAN),
        ] {
            assert!(matches!(project(&bad), Project::Unreadable(_)), "{bad:?}");
        }
    }

    #[test]
    fn shown_values_are_bounded_and_lossless_up_to_the_cut() {
        assert_eq!(Cell::Text(b"bad\xff".to_vec()).shown(), "bad\\xff");
        let long = Cell::Text(vec![b'a'; 10_000]).shown();
        assert!(
            long.len() < 200 && long.ends_with("(10000 bytes)"),
            "{long}"
        );
        assert_eq!(Cell::Real(f64::NAN).shown(), "NaN");
        assert_eq!(Cell::Blob(vec![0; 3]).shown(), "blob of 3 bytes");
    }

    /// Any SQLite value, weighted towards the hostile ones.
    pub fn any_cell() -> impl Strategy<Value = Cell> {
        prop_oneof![
            Just(Cell::Null),
            any::<i64>().prop_map(Cell::Integer),
            prop_oneof![
                Just(1e15),
                Just(f64::NAN),
                Just(f64::INFINITY),
                Just(-0.0),
                any::<f64>()
            ]
            .prop_map(Cell::Real),
            proptest::collection::vec(any::<u8>(), 0..64).prop_map(Cell::Text),
            "[0-9 .:TZ+-]{0,40}".prop_map(|s| Cell::Text(s.into_bytes())),
            proptest::collection::vec(any::<u8>(), 0..5000).prop_map(Cell::Blob),
            (0usize..20_000).prop_map(|n| Cell::Text(vec![b'7'; n])),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn every_value_decodes_without_panic(c in any_cell(), local in any::<bool>()) {
            let naive = if local { NaiveTimes::Local } else { NaiveTimes::Utc };
            if let Some(t) = time(&c, naive) {
                prop_assert!((0..=jiff::Timestamp::MAX.as_second()).contains(&t));
                prop_assert!(!clock::rfc3339(t).contains("beyond"));
            }
            if let Pid::Valid(p) = pid(&c) {
                prop_assert!(p > 0);
            }
            if let Project::Dir(d) = project(&c) {
                prop_assert!(!d.is_empty() && d.len() <= NAME_MAX);
            }
            let _ = name(&c);
            prop_assert!(c.shown().chars().count() <= SHOWN_MAX + 40);
        }
    }
}
