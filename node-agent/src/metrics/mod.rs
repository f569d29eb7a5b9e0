//! Metrics and HTTP endpoints. Filled in by the tracker/observability work.
