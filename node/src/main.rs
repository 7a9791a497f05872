//! The `strata` binary: one process per node.
//!
//! Today it offers `strata demo`, which runs the storage engine of one shard on real files:
//! the cluster (`strata start`, `strata dev`) arrives with the node/router issue.

mod demo;

use std::path::PathBuf;

const USAGE: &str = "\
usage: strata demo [--data-dir DIR] [--hosts N] [--hours H]

  demo   ingest generated node_exporter-like data into one shard engine under DIR,
         seal it into block files, and print a query result and bytes per sample
         (defaults: --data-dir ./strata-data --hosts 100 --hours 6)";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("demo") => {
            let mut opts = demo::Options {
                data_dir: PathBuf::from("./strata-data"),
                hosts: 100,
                hours: 6,
            };
            let mut rest = args[1..].iter();
            while let Some(flag) = rest.next() {
                let mut value = || {
                    rest.next()
                        .ok_or_else(|| anyhow::anyhow!("{flag} needs a value\n\n{USAGE}"))
                };
                match flag.as_str() {
                    "-h" | "--help" => {
                        println!("{USAGE}");
                        return Ok(());
                    }
                    "--data-dir" => opts.data_dir = PathBuf::from(value()?),
                    "--hosts" => opts.hosts = parse_positive(flag, value()?)?,
                    "--hours" => opts.hours = parse_positive(flag, value()?)?,
                    other => anyhow::bail!("unknown flag {other:?}\n\n{USAGE}"),
                }
            }
            demo::run(&opts)
        }
        Some("-h" | "--help") => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => anyhow::bail!("unknown command {other:?}\n\n{USAGE}"),
        None => anyhow::bail!("a command is required\n\n{USAGE}"),
    }
}

fn parse_positive(flag: &str, value: &str) -> anyhow::Result<usize> {
    match value.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => anyhow::bail!("{flag} needs a positive whole number, got {value:?}"),
    }
}
