//! TraceQL search against the real binary, checked against independent SQL.
