//! Trackers. Filled in by the tracker work.
