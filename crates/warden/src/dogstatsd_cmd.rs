//! `warden dogstatsd parse`: shows how the agent understands each message.

use std::io::{BufRead, Read, Write};
use std::process::ExitCode;

/// Reads stdin and prints one JSON object per message (`{"error": ...}` for bad ones).
/// Exits 1 when any message was rejected, so scripts can check a corpus.
pub(crate) fn parse_stdin(nul_separated: bool) -> anyhow::Result<ExitCode> {
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut bad = 0usize;
    let mut emit = |datagram: &[u8], out: &mut dyn Write| -> anyhow::Result<()> {
        for msg in warden_dogstatsd::parse_datagram(datagram) {
            let v = match msg {
                Ok(m) => warden_dogstatsd::message_to_json(&m),
                Err(e) => {
                    bad += 1;
                    warden_dogstatsd::error_to_json(&e)
                }
            };
            serde_json::to_writer(&mut *out, &v)?;
            out.write_all(b"\n")?;
        }
        Ok(())
    };
    if nul_separated {
        let mut all = Vec::new();
        stdin.lock().read_to_end(&mut all)?;
        for d in all.split(|&b| b == 0).filter(|d| !d.is_empty()) {
            emit(d, &mut out)?;
        }
    } else {
        for line in stdin.lock().split(b'\n') {
            emit(&line?, &mut out)?;
        }
    }
    out.flush()?;
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
