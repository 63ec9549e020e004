//! The guest runner's command line (guest-tests/harness/args.rs): libtest's filters select
//! guest checks the way they select ordinary tests.

#[path = "../guest-tests/harness/args.rs"]
mod args;

use args::Args;

fn parse(args: &[&str]) -> Args {
    Args::parse(args.iter().map(|s| s.to_string()))
}

#[test]
fn test_selects_without_filters_everything() {
    assert!(parse(&[]).selects("guest_k6_12_accel_work_queues"));
}

#[test]
fn test_selects_with_filters_substring_or_exact() {
    let a = parse(&["k7_3", "--skip", "work"]);
    assert!(a.selects("guest_k7_3_accel_plain_with_memfd_ram"));
    assert!(!a.selects("guest_k7_3_accel_work_queues"));
    assert!(!a.selects("guest_k6_12_accel_plain_with_memfd_ram"));
    let exact = parse(&[
        "--exact",
        "guest_k6_12_accel_work_queues",
        "--test-threads=1",
    ]);
    assert!(exact.selects("guest_k6_12_accel_work_queues"));
    assert!(!exact.selects("guest_k6_12_accel_work_queues_without_fd_use_dma_messages"));
}

#[test]
fn test_selects_with_ignored_nothing() {
    assert!(!parse(&["--ignored"]).selects("guest_k6_12_accel_work_queues"));
}

#[test]
fn test_parse_value_options_do_not_become_filters() {
    let a = parse(&["--test-threads", "2", "--color", "never", "--skip=x"]);
    assert!(a.filters.is_empty());
    assert_eq!(a.skip, ["x"]);
}
