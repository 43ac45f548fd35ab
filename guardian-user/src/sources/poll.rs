//! The polling source: sees no writes, only what `statvfs` shows each poll. Always available;
//! the path on macOS and the last fallback on Linux.

use super::{ProjectDir, Sample, Source, SourceError};

/// Reports no per-project growth; the daemon's `statvfs` poll is the whole signal.
#[derive(Debug, Default)]
pub struct PollSource;

impl Source for PollSource {
    fn name(&self) -> &'static str {
        "poll"
    }

    fn watch(&mut self, _projects: &[ProjectDir]) -> Result<(), SourceError> {
        Ok(())
    }

    fn drain(&mut self) -> Result<Sample, SourceError> {
        Ok(Sample::default())
    }
}
