//! Placeholder while the store is written.
