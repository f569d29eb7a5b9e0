//! Notify scripts. Filled in by the tracker work.
