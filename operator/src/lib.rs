//! kube-vrrp operator: plans one VRRPNode per node from VirtualIPs and Nodes, and aggregates the
//! agents' reports into VirtualIP status.
