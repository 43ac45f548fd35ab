//! Lexical checks of the configured task DB statements, at config load: exactly one statement,
//! read queries that hold no write/DDL/PRAGMA/ATTACH word, write statements that are a single
//! UPDATE, and only the named parameters Guardian binds. The DB's authorizer enforces the same
//! at prepare time; this catches it before anything runs, naming the key and line.

/// What a configured statement is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum StatementKind {
    /// `running_sql`, `activity_sql`: may only read.
    Read,
    /// `mark_failed_sql`, `release_slot_sql`: one UPDATE.
    Update,
}

/// Words that make a statement write, change the schema or leave the DB (outside strings,
/// comments and quoted identifiers). `REPLACE` followed by `(` is the string function.
const WRITE_WORDS: &[&str] = &[
    "INSERT",
    "UPDATE",
    "DELETE",
    "REPLACE",
    "UPSERT",
    "CREATE",
    "DROP",
    "ALTER",
    "PRAGMA",
    "ATTACH",
    "DETACH",
    "VACUUM",
    "REINDEX",
    "ANALYZE",
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "SAVEPOINT",
    "RELEASE",
    "TRANSACTION",
    "LOAD_EXTENSION",
];

/// Checks a configured statement lexically: exactly one statement, of the right kind (a read
/// query that holds no write/DDL/PRAGMA/ATTACH word, or a single UPDATE), using only named
/// parameters from `allowed`; `required` refuses empty text.
pub(super) fn check_sql(
    sql: &str,
    allowed: &[&str],
    required: bool,
    kind: StatementKind,
) -> Result<(), String> {
    if sql.trim().is_empty() {
        return if required {
            Err("must not be empty".into())
        } else {
            Ok(())
        };
    }
    let tokens = sql_tokens(sql)?;
    if let Some(end) = tokens.iter().position(|t| *t == SqlToken::Semicolon) {
        if tokens.len() > end + 1 {
            return Err(
                "holds more than one statement (`;` followed by more): give exactly one".into(),
            );
        }
    }
    let words: Vec<(usize, &str)> = tokens
        .iter()
        .enumerate()
        .filter_map(|(i, t)| match t {
            SqlToken::Word(w) => Some((i, w.as_str())),
            _ => None,
        })
        .collect();
    let first = words.first().map(|(_, w)| *w).unwrap_or("");
    let is_function = |i: usize| tokens.get(i + 1) == Some(&SqlToken::Open);
    match kind {
        StatementKind::Read => {
            if !matches!(first, "SELECT" | "WITH" | "VALUES") {
                return Err(format!(
                    "must be a read query (SELECT …); it starts with `{first}`"
                ));
            }
            if let Some((_, w)) = words
                .iter()
                .find(|(i, w)| WRITE_WORDS.contains(w) && !(*w == "REPLACE" && is_function(*i)))
            {
                return Err(format!(
                    "contains `{w}` outside strings and comments, but this query may only read (quote an identifier that happens to be this word)"
                ));
            }
        }
        StatementKind::Update => {
            if first != "UPDATE" {
                return Err(format!(
                    "must be a single UPDATE statement; it starts with `{first}`"
                ));
            }
            if let Some((_, w)) = words
                .iter()
                .skip(1)
                .find(|(i, w)| WRITE_WORDS.contains(w) && !(*w == "REPLACE" && is_function(*i)))
            {
                return Err(format!(
                    "contains `{w}` outside strings and comments, but this statement may only be one UPDATE (`UPDATE OR REPLACE` can delete rows; quote an identifier that happens to be this word)"
                ));
            }
        }
    }
    for p in tokens.iter().filter_map(|t| match t {
        SqlToken::Param(p) => Some(p),
        _ => None,
    }) {
        if !allowed.contains(&p.as_str()) {
            return Err(format!(
                "unknown parameter `:{p}`; this statement may use {}",
                allowed
                    .iter()
                    .map(|a| format!(":{a}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    Ok(())
}

/// One lexical token of a statement, strings, quoted identifiers and comments left out.
#[derive(Clone, Debug, PartialEq, Eq)]
enum SqlToken {
    /// A keyword or bare identifier, upper-cased.
    Word(String),
    /// A named parameter, without its prefix.
    Param(String),
    Semicolon,
    Open,
    Other,
}

/// The tokens of `sql` outside string literals, quoted identifiers and comments. Positional
/// `?` parameters and unterminated strings or comments are refused.
fn sql_tokens(sql: &str) -> Result<Vec<SqlToken>, String> {
    let chars: Vec<char> = sql.chars().collect();
    let at = |i: usize| chars.get(i).copied();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(c) = at(i) {
        match c {
            '\'' | '"' | '`' => {
                // Skip to the closing quote; a doubled quote is an escaped one.
                i += 1;
                loop {
                    match at(i) {
                        None => return Err(format!("a {c}-quoted text is not closed")),
                        Some(q) if q == c && at(i + 1) == Some(c) => i += 2,
                        Some(q) if q == c => break,
                        Some(_) => i += 1,
                    }
                }
                i += 1;
            }
            '[' => {
                while at(i).is_some_and(|x| x != ']') {
                    i += 1;
                }
                if at(i).is_none() {
                    return Err("a [bracketed] identifier is not closed".into());
                }
                i += 1;
            }
            '-' if at(i + 1) == Some('-') => {
                while at(i).is_some_and(|x| x != '\n') {
                    i += 1;
                }
            }
            '/' if at(i + 1) == Some('*') => {
                i += 2;
                while at(i).is_some() && !(at(i) == Some('*') && at(i + 1) == Some('/')) {
                    i += 1;
                }
                if at(i).is_none() {
                    return Err("a /* comment */ is not closed".into());
                }
                i += 2;
            }
            '?' => return Err("use named parameters such as `:id`, not `?`".into()),
            ':' | '@' | '$' => {
                let start = i + 1;
                let mut end = start;
                while at(end).is_some_and(|x| x.is_ascii_alphanumeric() || x == '_') {
                    end += 1;
                }
                if end == start {
                    return Err(format!("a lone `{c}` is not a parameter"));
                }
                out.push(SqlToken::Param(chars[start..end].iter().collect()));
                i = end;
            }
            ';' => {
                out.push(SqlToken::Semicolon);
                i += 1;
            }
            '(' => {
                out.push(SqlToken::Open);
                i += 1;
            }
            c if c.is_alphanumeric() || c == '_' => {
                let start = i;
                while at(i).is_some_and(|x| x.is_alphanumeric() || x == '_') {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                out.push(SqlToken::Word(word.to_ascii_uppercase()));
            }
            c if c.is_whitespace() => i += 1,
            _ => {
                out.push(SqlToken::Other);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// The named parameters (`:name`, `@name`, `$name`) of a statement, outside string literals,
/// quoted identifiers and comments. Positional `?` parameters are refused.
pub fn named_params(sql: &str) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for t in sql_tokens(sql)? {
        if let SqlToken::Param(p) = t {
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tasks::{
        DEFAULT_MARK_FAILED_SQL, DEFAULT_RUNNING_SQL, QUERY_PARAMS, UPDATE_PARAMS,
    };

    #[test]
    fn named_params_skip_strings_comments_and_identifiers() {
        assert_eq!(
            named_params(DEFAULT_MARK_FAILED_SQL).unwrap(),
            ["error", "id", "node", "project"]
        );
        assert_eq!(
            named_params("SELECT ':x', \"a:b\", [c:d] FROM t -- :y\n WHERE a = @node /* :z */")
                .unwrap(),
            ["node"]
        );
        assert!(named_params("UPDATE t SET a = ? WHERE id = :id").is_err());
        let read = StatementKind::Read;
        assert!(check_sql("SELECT 1 WHERE :bogus", QUERY_PARAMS, true, read).is_err());
        assert!(check_sql("", QUERY_PARAMS, true, read).is_err());
        assert!(check_sql("", QUERY_PARAMS, false, read).is_ok());
    }

    #[test]
    fn delete_returning_and_every_other_write_are_refused_as_statements() {
        let (read, update) = (StatementKind::Read, StatementKind::Update);
        let q = |sql: &str| check_sql(sql, QUERY_PARAMS, true, read);
        let u = |sql: &str| check_sql(sql, UPDATE_PARAMS, true, update);
        for bad in [
            "DELETE FROM tasks RETURNING id, project, started_at, pid",
            "delete from tasks returning *",
            "WITH x AS (SELECT 1) DELETE FROM tasks RETURNING *",
            "SELECT id FROM tasks; DELETE FROM tasks",
            "SELECT id FROM tasks WHERE node = :node; -- one more\n SELECT 1",
            "SELECT id FROM tasks /* ; */ WHERE 1; PRAGMA writable_schema = 1",
            "PRAGMA table_info(tasks)",
            "ATTACH DATABASE '/tmp/x' AS x",
            "SELECT * FROM tasks WHERE id IN (SELECT 1) UNION SELECT load_extension('x')",
            "INSERT INTO tasks DEFAULT VALUES",
            "REPLACE INTO tasks VALUES (1)",
            "SELECT 'unterminated",
            "SELECT 1 /* open comment",
            "VACUUM",
        ] {
            assert!(q(bad).is_err(), "{bad}");
        }
        for ok in [
            DEFAULT_RUNNING_SQL,
            "SELECT id, replace(project, '/', '-') AS project, started_at, pid FROM tasks;",
            "SELECT id, 'DELETE; DROP' AS project, \"update\" AS started_at, [insert] AS pid FROM t -- DELETE\n",
            "WITH r AS (SELECT * FROM tasks WHERE node = :node) SELECT id, project, started_at, pid FROM r",
        ] {
            assert_eq!(q(ok), Ok(()), "{ok}");
        }
        for bad in [
            "DELETE FROM tasks WHERE id = :id",
            "UPDATE tasks SET status = 'failed' WHERE id = :id; DELETE FROM slots",
            "UPDATE OR REPLACE tasks SET id = :id",
            "INSERT INTO slots VALUES (:id)",
            "SELECT 1 WHERE :id",
            "UPDATE tasks SET status = (SELECT 1) WHERE id = :id RETURNING (DROP)",
        ] {
            assert!(u(bad).is_err(), "{bad}");
        }
        assert_eq!(u(DEFAULT_MARK_FAILED_SQL), Ok(()));
        assert_eq!(
            u("UPDATE slots SET task_id = NULL WHERE node = :node AND task_id = :id"),
            Ok(())
        );
    }
}
