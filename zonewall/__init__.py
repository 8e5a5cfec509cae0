"""zonewall: zone-based stateful nftables firewall for VM clusters."""
