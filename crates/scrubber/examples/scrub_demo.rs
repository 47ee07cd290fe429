//! Print a few scrubbed samples (stdin → stdout): `cargo run -p warden-scrubber --example scrub_demo < file`.
use std::io::{Read, Write};
use std::sync::Arc;
use warden_scrubber::{ScrubWriter, Scrubber};

fn main() -> std::io::Result<()> {
    let mut input = Vec::new();
    std::io::stdin().read_to_end(&mut input)?;
    let mut w = ScrubWriter::new(std::io::stdout().lock(), Arc::new(Scrubber::default()));
    w.write_all(&input)?;
    w.finish()?.flush()
}
