//! `--key value` options shared by the project's binaries (training, evaluation, benchmarks).

use anyhow::{bail, Context, Result};
use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::str::FromStr;

/// The program's arguments (without its name); with `--help` or `-h` among them it prints
/// `usage` (the binary's documentation, `docs/usage/`) and exits successfully instead.
pub fn args_or_usage(usage: &str) -> Vec<String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if asks_for_help(&args) {
        println!("{}", usage.trim_end());
        std::process::exit(0);
    }
    args
}

fn asks_for_help(args: &[String]) -> bool {
    args.iter().any(|a| a == "--help" || a == "-h")
}

/// Parsed `--key value` pairs. Every key must be read by the program: `finish` rejects the
/// ones nobody asked for, so a misspelt option is an error instead of a silent default.
#[derive(Debug, Default)]
pub struct KeyValues {
    values: HashMap<String, String>,
    read: RefCell<BTreeSet<String>>,
}

impl KeyValues {
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Self> {
        let mut values = HashMap::new();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let key = arg.strip_prefix("--").with_context(|| format!("unexpected argument {arg:?}"))?;
            let value = args.next().with_context(|| format!("{arg} needs a value"))?;
            if values.insert(key.to_string(), value).is_some() {
                bail!("{arg} given twice");
            }
        }
        Ok(Self { values, read: RefCell::default() })
    }

    /// The raw value of `--key`, if given.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.read.borrow_mut().insert(key.to_string());
        self.values.get(key).map(String::as_str)
    }

    pub fn string(&self, key: &str, default: &str) -> String {
        self.get(key).unwrap_or(default).to_string()
    }

    /// `--key` parsed as `T`, or `default` when absent.
    pub fn value<T: FromStr>(&self, key: &str, default: T) -> Result<T>
    where
        T::Err: std::error::Error + Send + Sync + 'static,
    {
        Ok(self.optional(key)?.unwrap_or(default))
    }

    pub fn optional<T: FromStr>(&self, key: &str) -> Result<Option<T>>
    where
        T::Err: std::error::Error + Send + Sync + 'static,
    {
        self.get(key).map(|v| v.parse().with_context(|| format!("--{key} {v:?}"))).transpose()
    }

    /// A comma-separated list (empty items dropped).
    pub fn list<T: FromStr>(&self, key: &str) -> Result<Option<Vec<T>>>
    where
        T::Err: std::error::Error + Send + Sync + 'static,
    {
        self.get(key)
            .map(|v| {
                v.split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| s.parse().with_context(|| format!("--{key}: {s:?}")))
                    .collect()
            })
            .transpose()
    }

    /// Errors on options the program never read.
    pub fn finish(&self) -> Result<()> {
        let read = self.read.borrow();
        let mut unknown: Vec<&str> = self.values.keys().filter(|k| !read.contains(*k)).map(String::as_str).collect();
        unknown.sort_unstable();
        if !unknown.is_empty() {
            bail!("unknown option(s): --{}", unknown.join(", --"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(args: &[&str]) -> Result<KeyValues> {
        KeyValues::parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn values_defaults_lists_and_unknown_keys() {
        let o = kv(&["--frames", "16", "--clips", "a.mp4,b.avi", "--lambdas", "64,8,0.5", "--typo", "1"]).unwrap();
        assert_eq!(o.value("frames", 32usize).unwrap(), 16);
        assert_eq!(o.value("steps", 7i64).unwrap(), 7);
        assert_eq!(o.list::<String>("clips").unwrap().unwrap(), ["a.mp4", "b.avi"]);
        assert_eq!(o.list::<f64>("lambdas").unwrap().unwrap(), [64.0, 8.0, 0.5]);
        assert_eq!(o.optional::<f64>("minutes").unwrap(), None);
        let err = o.finish().unwrap_err().to_string();
        assert!(err.contains("--typo"), "{err}");
        assert!(!err.contains("frames"), "{err}");
    }

    #[test]
    fn help_is_asked_for_anywhere_on_the_line() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(asks_for_help(&args(&["--help"])));
        assert!(asks_for_help(&args(&["codec", "--steps", "3", "-h"])));
        assert!(!asks_for_help(&args(&["--clip", "help.mp4"])));
    }

    #[test]
    fn malformed_arguments_are_errors() {
        assert!(kv(&["frames", "16"]).is_err());
        assert!(kv(&["--frames"]).is_err());
        assert!(kv(&["--frames", "1", "--frames", "2"]).is_err());
        let o = kv(&["--frames", "sixteen"]).unwrap();
        let err = format!("{:#}", o.value("frames", 1usize).unwrap_err());
        assert!(err.contains("--frames \"sixteen\""), "{err}");
    }
}
