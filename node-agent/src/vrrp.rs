//! The sans-IO VRRP core. Filled in by the protocol-core work.
