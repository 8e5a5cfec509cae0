"""Proxmox VE firewall importer (cluster.fw, host.fw, <vmid>.fw + an inventory)."""
