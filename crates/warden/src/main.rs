//! The `warden` binary: a thin command-line edge over the library crates.
fn main() {}
