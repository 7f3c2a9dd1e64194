//! Tempo trace-by-id v2, tags and tag values against the real binary.
