//! The task DB's authorizer: what a configured statement may do at prepare time (read queries
//! only read; write statements only UPDATE, plus what the DB's own triggers do; Guardian's own
//! transaction control), and the refusal it reports. Pure.

use rusqlite::hooks::{AuthAction, AuthContext};

/// What the statement being prepared may do (the authorizer's mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Allowed {
    /// Guardian's own transaction control (`BEGIN IMMEDIATE`, `COMMIT`, `ROLLBACK`).
    Transaction = 0,
    /// A read query: SELECT, reading columns, functions.
    Read = 1,
    /// A write statement: one UPDATE (and what the DB's own triggers do).
    Update = 2,
}

/// Functions no configured statement may call: they reach outside the DB.
const DENIED_FUNCTIONS: &[&str] = &[
    "load_extension",
    "fts3_tokenizer",
    "readfile",
    "writefile",
    "edit",
];

/// Pure: whether a statement prepared as `allowed` may perform `ctx`; `Err` says what it tried.
pub(super) fn authorize(allowed: Allowed, ctx: &AuthContext<'_>) -> Result<(), String> {
    let in_trigger = ctx.accessor.is_some();
    match (allowed, ctx.action) {
        (Allowed::Transaction, AuthAction::Transaction { .. }) => Ok(()),
        (Allowed::Read | Allowed::Update, AuthAction::Select | AuthAction::Recursive) => Ok(()),
        (Allowed::Read | Allowed::Update, AuthAction::Read { .. }) => Ok(()),
        (Allowed::Read | Allowed::Update, AuthAction::Function { function_name }) => {
            if DENIED_FUNCTIONS
                .iter()
                .any(|f| f.eq_ignore_ascii_case(function_name))
            {
                Err(format!("calls the function {function_name}()"))
            } else {
                Ok(())
            }
        }
        (Allowed::Update, AuthAction::Update { .. }) => Ok(()),
        // The DB's own triggers belong to the DB: an UPDATE that fires them is still an UPDATE.
        (Allowed::Update, AuthAction::Insert { .. } | AuthAction::Delete { .. }) if in_trigger => {
            Ok(())
        }
        (_, action) => Err(describe(&action)),
    }
}

/// What an action does, in words.
fn describe(action: &AuthAction<'_>) -> String {
    match action {
        AuthAction::Insert { table_name } => format!("INSERT into table {table_name}"),
        AuthAction::Delete { table_name } => format!("DELETE from table {table_name}"),
        AuthAction::Update {
            table_name,
            column_name,
        } => format!("UPDATE of {table_name}.{column_name}"),
        AuthAction::Pragma { pragma_name, .. } => format!("PRAGMA {pragma_name}"),
        AuthAction::Attach { .. } => "ATTACH of another database".into(),
        AuthAction::Detach { .. } => "DETACH".into(),
        AuthAction::Transaction { .. } | AuthAction::Savepoint { .. } => {
            "transaction control (BEGIN/COMMIT/ROLLBACK/SAVEPOINT)".into()
        }
        AuthAction::Select => "SELECT".into(),
        other => format!("schema or maintenance change ({other:?})"),
    }
}

/// A refusal by the authorizer: what the statement tried.
#[derive(Debug)]
pub(super) struct Refusal(pub(super) String);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "refused by Guardian: the statement {}", self.0)
    }
}

impl std::error::Error for Refusal {}

/// A refusal, carried through rusqlite's error type.
pub(super) fn refused(what: String) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(Refusal(what)))
}

/// The refusal inside an error, if it is one.
pub(super) fn refusal(e: &rusqlite::Error) -> Option<&Refusal> {
    match e {
        rusqlite::Error::ToSqlConversionFailure(b) => b.downcast_ref::<Refusal>(),
        _ => None,
    }
}
