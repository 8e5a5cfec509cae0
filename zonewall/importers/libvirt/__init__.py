"""libvirt nwfilter importer (filters, domain interfaces, networks)."""
