//! Running host commands: check their status, capture or tee their output.
//!
//! Every failure names the command line, so a red CI log says what broke without a rerun.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// The command line as a person would type it (for messages).
pub fn display(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

/// Runs `cmd` with inherited stdio; a non-zero exit is an error.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{}`", display(cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", display(cmd));
    }
    Ok(())
}

/// Runs `cmd` and returns its stdout; stderr goes to the terminal. A non-zero exit is an error.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot start `{}`", display(cmd)))?;
    if !out.status.success() {
        bail!("`{}` failed ({})", display(cmd), out.status);
    }
    String::from_utf8(out.stdout).with_context(|| format!("`{}` printed non-UTF-8", display(cmd)))
}

/// Reads `from` line by line until it closes, echoing each line to stdout when `echo` is set and
/// appending it to `log`, and returns everything read.
///
/// Carriage returns are dropped: a guest's serial console ends its lines with "\r\n". Output
/// that is not UTF-8 is kept lossily, since it is only read by people and by line parsers.
pub fn tee(from: impl Read, echo: bool, mut log: Option<&mut File>) -> io::Result<String> {
    let mut reader = BufReader::new(from);
    let mut all = String::new();
    let mut raw = Vec::new();
    loop {
        raw.clear();
        if reader.read_until(b'\n', &mut raw)? == 0 {
            return Ok(all);
        }
        raw.retain(|&b| b != b'\r');
        if !raw.ends_with(b"\n") {
            raw.push(b'\n');
        }
        let line = String::from_utf8_lossy(&raw);
        if echo {
            let mut stdout = io::stdout().lock();
            stdout.write_all(line.as_bytes())?;
            stdout.flush()?;
        }
        if let Some(log) = log.as_deref_mut() {
            log.write_all(line.as_bytes())?;
        }
        all.push_str(&line);
    }
}
