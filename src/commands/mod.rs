//! The one-shot commands, one module each, over the domain and the store: [`ingest`] (apply a
//! file of events), [`dlq`] (list and replay dead letters), [`publish`] (send a file of events
//! to the queue) and [`sync`] (one pass of `stigg-byos sync`). [`crate::cli`] parses their
//! arguments and calls them; the long-running roles are started through [`crate::run`].

use std::io::BufRead;

use anyhow::Context;

pub mod dlq;
pub mod ingest;
pub mod publish;
pub mod sync;

/// The lines of `file`, or of stdin for `-`.
fn read_lines(file: &str) -> anyhow::Result<Box<dyn BufRead>> {
    Ok(if file == "-" {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(file).with_context(|| format!("opening {file}"))?,
        ))
    })
}
