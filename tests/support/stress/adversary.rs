//! (stub)
pub const ROLE: &str = "adversary";
pub fn main(_args: &[String]) -> anyhow::Result<()> {
    Ok(())
}
