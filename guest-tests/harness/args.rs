//! The part of libtest's command line the guest runner honours, so that `cargo test NAME`,
//! `--exact`, `--skip` and `--list` select guest checks the way they select ordinary tests.
//! Tested in tests/guest_runner_args.rs (a `harness = false` target runs no `#[test]`s).

/// What to run and how.
#[derive(Debug, Default)]
pub struct Args {
    /// Run tests whose names contain one of these (all when empty).
    pub filters: Vec<String>,
    /// Leave out tests whose names contain one of these.
    pub skip: Vec<String>,
    /// Filters and skips match whole names.
    pub exact: bool,
    /// Print the test names and run nothing.
    pub list: bool,
    /// `--ignored`: run only ignored tests (there are none).
    pub ignored_only: bool,
    /// `--nocapture`/`--show-output`: print every guest console.
    pub show_output: bool,
}

/// Options that take a value (as `--opt value` or `--opt=value`) and are accepted and ignored:
/// guests run one at a time whatever `--test-threads` says.
const IGNORED_WITH_VALUE: &[&str] = &["--test-threads", "--color", "--format", "--logfile", "-Z"];

impl Args {
    /// Parses the arguments after the program name.
    pub fn parse(mut args: impl Iterator<Item = String>) -> Args {
        let mut a = Args::default();
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
                _ => (arg.clone(), None),
            };
            let value =
                |args: &mut dyn Iterator<Item = String>| inline.clone().or_else(|| args.next());
            match flag.as_str() {
                "--skip" => a.skip.extend(value(&mut args)),
                "--exact" => a.exact = true,
                "--list" => a.list = true,
                "--ignored" => a.ignored_only = true,
                "--nocapture" | "--show-output" => a.show_output = true,
                f if IGNORED_WITH_VALUE.contains(&f) => drop(value(&mut args)),
                f if f.starts_with('-') => eprintln!("guest runner: ignoring option {f}"),
                _ => a.filters.push(arg),
            }
        }
        a
    }

    /// Whether the test `name` is selected.
    pub fn selects(&self, name: &str) -> bool {
        let hit = |pattern: &String| {
            if self.exact {
                name == pattern
            } else {
                name.contains(pattern.as_str())
            }
        };
        !self.ignored_only
            && (self.filters.is_empty() || self.filters.iter().any(hit))
            && !self.skip.iter().any(hit)
    }
}
