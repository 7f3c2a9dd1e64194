//! The Jaeger query API against the real binary.
