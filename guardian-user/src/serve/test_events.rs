//! What the relay's and the streams' tests publish, and the runtime they run it on.

use crate::publish::Event;

/// A small event, numbered.
pub(super) fn changed(i: usize) -> Event {
    Event::SourceChanged {
        from: "a".into(),
        to: format!("{i}"),
        degraded: None,
    }
}

pub(super) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}
