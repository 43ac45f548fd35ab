//! How log lines look: as today on a terminal or a plain stderr; under systemd (stderr is the
//! journal stream `JOURNAL_STREAM` names) without timestamps — the journal stamps each line —
//! and with an sd-daemon(3) `<N>` syslog priority prefix on every line, so `journalctl -p warning`
//! filters by level. The prefix is written on stderr rather than through `tracing-journald`:
//! nothing more to link or connect to, the same fields in the same order as on a terminal, and
//! the lines still reach the journal when the journal socket does not (stderr is the unit's
//! stream).
//!
//! Invariants: every line of a multi-line message carries the prefix; the journal format is
//! taken only when stderr really is the stream `JOURNAL_STREAM` names (a variable inherited by a
//! child whose stderr went elsewhere is ignored, as sd-daemon(3) asks).

use std::fmt::Write as _;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::registry::LookupSpan;

/// Sets up the process's logging: filter from `GUARDIAN_LOG` (default `info`), to stderr, in
/// the journal format when stderr is the journal stream.
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GUARDIAN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if stderr_is_journal() {
        builder.with_ansi(false).event_format(JournalFormat).init();
    } else {
        use std::io::IsTerminal;
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

/// True when `JOURNAL_STREAM` (`DEV:INODE`) names the file stderr is.
pub fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(parse_journal_stream) else {
        return false;
    };
    rustix::fs::fstat(std::io::stderr())
        .is_ok_and(|st| crate::fsys::stat_identity(&st) == (dev, ino))
}

/// `DEV:INODE` as systemd writes `JOURNAL_STREAM` (both decimal).
pub fn parse_journal_stream(text: &str) -> Option<(u64, u64)> {
    let (dev, ino) = text.trim().split_once(':')?;
    Some((dev.parse().ok()?, ino.parse().ok()?))
}

/// The syslog priority of a tracing level (sd-daemon(3): 3 error, 4 warning, 6 info, 7 debug).
pub fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// `text` with `<priority>` in front of each of its lines (one line for an empty text), each
/// line ended by a newline.
pub fn prefix_lines(priority: u8, text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    let mut lines = text.lines().peekable();
    if lines.peek().is_none() {
        let _ = writeln!(out, "<{priority}>");
    }
    for line in lines {
        let _ = writeln!(out, "<{priority}>{line}");
    }
    out
}

/// The journal's line format: `<N>` then the event's target and fields, no timestamp, no level
/// word (the priority says it), no colours.
pub struct JournalFormat;

impl<S, N> FormatEvent<S, N> for JournalFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: format::Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut text = String::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                text.push_str(span.name());
                text.push_str(": ");
            }
        }
        text.push_str(event.metadata().target());
        text.push_str(": ");
        ctx.format_fields(format::Writer::new(&mut text), event)?;
        writer.write_str(&prefix_lines(priority(*event.metadata().level()), &text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_gets_the_priority_prefix() {
        assert_eq!(prefix_lines(4, "a\nb"), "<4>a\n<4>b\n");
        assert_eq!(prefix_lines(6, "one"), "<6>one\n");
        assert_eq!(prefix_lines(3, ""), "<3>\n");
    }

    #[test]
    fn levels_map_to_syslog_priorities() {
        assert_eq!(priority(Level::ERROR), 3);
        assert_eq!(priority(Level::WARN), 4);
        assert_eq!(priority(Level::INFO), 6);
        assert_eq!(priority(Level::DEBUG), 7);
        assert_eq!(priority(Level::TRACE), 7);
    }

    #[test]
    fn journal_stream_is_dev_colon_inode() {
        assert_eq!(parse_journal_stream("8:12345"), Some((8, 12345)));
        assert_eq!(parse_journal_stream(" 8:1\n"), Some((8, 1)));
        for bad in ["", "8", "8:", ":1", "a:b", "8:1:2", "-1:2"] {
            assert_eq!(parse_journal_stream(bad), None, "{bad}");
        }
    }
}
