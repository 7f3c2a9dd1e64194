//! Queries behind the Jaeger API: services, operations, trace search, dependencies.
