//! keepalived.conf → VirtualIP YAML (the `convert` command). Filled in by the keepalived.conf work.
