//! The Jaeger query API (v1 and api_v3), served on `--jaeger-addr` (default :16686).
