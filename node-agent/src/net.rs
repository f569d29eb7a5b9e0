//! Network I/O: raw VRRP sockets, netlink, ARP/NA. Filled in by the data-plane work.
