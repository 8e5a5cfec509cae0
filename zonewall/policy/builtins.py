"""Built-in library: services (macros), guard filter names, ICMP type names."""

from __future__ import annotations

from typing import Any

# name -> service definition in the same shape a user writes under `services:`
BUILTIN_SERVICES: dict[str, dict[str, Any]] = {
    "ssh": {"tcp": [22]},
    "http": {"tcp": [80]},
    "https": {"tcp": [443]},
    "dns": {"tcp": [53], "udp": [53]},
    "dhcp": {"udp": [67, 68]},
    "dhcpv6": {"udp": [546, 547]},
    "ntp": {"udp": [123]},
    "smtp": {"tcp": [25]},
    "smtps": {"tcp": [465]},
    "submission": {"tcp": [587]},
    "imap": {"tcp": [143]},
    "imaps": {"tcp": [993]},
    "pop3": {"tcp": [110]},
    "pop3s": {"tcp": [995]},
    "ftp": {"tcp": [21], "helper": "ftp"},
    "tftp": {"udp": [69], "helper": "tftp"},
    "ldap": {"tcp": [389], "udp": [389]},
    "ldaps": {"tcp": [636]},
    "kerberos": {"tcp": [88], "udp": [88]},
    "postgres": {"tcp": [5432]},
    "mysql": {"tcp": [3306]},
    "mssql": {"tcp": [1433]},
    "oracle": {"tcp": [1521]},
    "redis": {"tcp": [6379]},
    "memcached": {"tcp": [11211]},
    "mongodb": {"tcp": [27017]},
    "elasticsearch": {"tcp": [9200, 9300]},
    "kafka": {"tcp": [9092]},
    "rabbitmq": {"tcp": [5672]},
    "nfs": {"tcp": [111, 2049], "udp": [111, 2049]},
    "smb": {"tcp": [139, 445], "udp": [137, 138]},
    "iscsi": {"tcp": [3260]},
    "ceph": {"tcp": [3300, 6789, "6800-7300"]},
    "snmp": {"udp": [161]},
    "syslog": {"udp": [514]},
    "rdp": {"tcp": [3389]},
    "vnc": {"tcp": ["5900-5999"]},
    "spice": {"tcp": [3128]},
    "http-alt": {"tcp": [8080]},
    "prometheus-node": {"tcp": [9100]},
    "ping": {"icmp": ["echo-request"]},
    "traceroute": {"udp": ["33434-33524"], "icmp": ["echo-request"]},
    "bgp": {"tcp": [179]},
    "ospf": {"proto": ["ospf"]},
    "vrrp": {"proto": ["vrrp"]},
    "ipsec": {"udp": [500, 4500], "proto": ["esp", "ah"]},
    "wireguard": {"udp": [51820]},
    "openvpn": {"udp": [1194]},
}

# Guard filters named as in libvirt's nwfilter library (see docs/policy-guide.md).
BUILTIN_FILTERS: tuple[str, ...] = (
    "clean-traffic",
    "no-mac-spoofing",
    "no-ip-spoofing",
    "no-arp-spoofing",
    "no-arp-ip-spoofing",
    "no-arp-mac-spoofing",
    "no-ipv6-spoofing",
    "allow-arp",
    "allow-dhcp",
    "allow-dhcpv6",
    "no-ip-multicast",
    "no-mac-broadcast",
    "no-other-l2-traffic",
    "qemu-announce-self",
    # libvirt's stock filters added by issue 18 (docs/policy-guide.md)
    "allow-dhcp-server",
    "allow-incoming-ipv4",
    "allow-ipv4",
    "no-other-rarp-traffic",
    "qemu-announce-self-rarp",
)

# Composite built-ins expand to their parts (libvirt's clean-traffic, extended to IPv6).
BUILTIN_FILTER_INCLUDES: dict[str, tuple[str, ...]] = {
    "clean-traffic": ("no-mac-spoofing", "no-ip-spoofing", "no-ipv6-spoofing", "no-arp-spoofing", "allow-dhcp", "allow-dhcpv6", "qemu-announce-self", "no-other-l2-traffic"),
    "no-arp-spoofing": ("no-arp-mac-spoofing", "no-arp-ip-spoofing"),
}

# nft's ICMP type names per family; names in both apply to both families.
ICMP_V4_TYPES: dict[str, int] = {
    "echo-reply": 0,
    "destination-unreachable": 3,
    "source-quench": 4,
    "redirect": 5,
    "echo-request": 8,
    "router-advertisement": 9,
    "router-solicitation": 10,
    "time-exceeded": 11,
    "parameter-problem": 12,
    "timestamp-request": 13,
    "timestamp-reply": 14,
    "info-request": 15,
    "info-reply": 16,
    "address-mask-request": 17,
    "address-mask-reply": 18,
}
ICMP_V6_TYPES: dict[str, int] = {
    "destination-unreachable": 1,
    "packet-too-big": 2,
    "time-exceeded": 3,
    "parameter-problem": 4,
    "echo-request": 128,
    "echo-reply": 129,
    "mld-listener-query": 130,
    "mld-listener-report": 131,
    "mld-listener-done": 132,
    "nd-router-solicit": 133,
    "nd-router-advert": 134,
    "nd-neighbor-solicit": 135,
    "nd-neighbor-advert": 136,
    "nd-redirect": 137,
    "router-renumbering": 138,
    "mld2-listener-report": 143,
}

IP_PROTOCOLS: dict[str, int] = {
    "icmp": 1,
    "igmp": 2,
    "tcp": 6,
    "udp": 17,
    "gre": 47,
    "esp": 50,
    "ah": 51,
    "icmpv6": 58,
    "ospf": 89,
    "pim": 103,
    "vrrp": 112,
    "l2tp": 115,
    "sctp": 132,
    "udplite": 136,
}

CONNTRACK_HELPERS: tuple[str, ...] = ("ftp", "tftp", "sip", "irc", "h323", "pptp", "amanda", "snmp", "netbios-ns")

CONNTRACK_TIMEOUT_KEYS: tuple[str, ...] = (
    "tcp_established",
    "tcp_syn_sent",
    "tcp_syn_recv",
    "tcp_fin_wait",
    "tcp_close_wait",
    "tcp_last_ack",
    "tcp_time_wait",
    "tcp_close",
    "udp",
    "udp_stream",
    "icmp",
)

# Ports of zonewall itself that the anti-lockout keeps open for settings.management.
CONTROLLER_PORT = 9440
AGENT_PORT = 9441
MANAGEMENT_TCP_PORTS: tuple[int, ...] = (22, CONTROLLER_PORT, AGENT_PORT)
