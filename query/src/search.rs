//! Trace search: TraceQL compiled to DataFusion plans.
