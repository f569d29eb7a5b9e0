//! Leader election placeholder (filled in below).
