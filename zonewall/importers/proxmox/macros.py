"""Proxmox VE's standard firewall macros (pve-firewall's $pve_fw_macros).

Each macro is a list of (protocol, destination ports, source ports); ports as
Proxmox writes them (`a:b` ranges, `,` lists). Where Proxmox overrides a macro for
IPv6 (Ping and Trcrt use icmpv6 there), the zonewall translation matches both
families with the same ICMP type name, which is exactly that. `NeighborDiscovery`
and `DHCPv6` are Proxmox's IPv6-only macros.
"""

from __future__ import annotations

Entry = tuple[str, str | None, str | None]

MACROS: dict[str, tuple[str, list[Entry]]] = {
    "Amanda": ("Amanda Backup", [("udp", "10080", None), ("tcp", "10080", None)]),
    "Auth": ("Auth (identd) traffic", [("tcp", "113", None)]),
    "BGP": ("Border Gateway Protocol traffic", [("tcp", "179", None)]),
    "BitTorrent": ("BitTorrent traffic for BitTorrent 3.1 and earlier", [("tcp", "6881:6889", None), ("udp", "6881", None)]),
    "BitTorrent32": ("BitTorrent traffic for BitTorrent 3.2 and later", [("tcp", "6881:6999", None), ("udp", "6881", None)]),
    "Ceph": ("Ceph Storage Cluster traffic (Ceph Monitors, OSD & MDS Daemons)", [("tcp", "6789", None), ("tcp", "3300", None), ("tcp", "6800:7300", None)]),
    "CVS": ("Concurrent Versions System pserver traffic", [("tcp", "2401", None)]),
    "Citrix": ("Citrix/ICA traffic (ICA, ICA Browser, CGP)", [("tcp", "1494", None), ("udp", "1604", None), ("tcp", "2598", None)]),
    "DAAP": ("Digital Audio Access Protocol traffic", [("tcp", "3689", None), ("udp", "3689", None)]),
    "DCC": ("Distributed Checksum Clearinghouse spam filtering mechanism", [("tcp", "6277", None)]),
    "DHCPfwd": ("Forwarded DHCP traffic", [("udp", "67:68", "67:68")]),
    "DHCPv6": ("DHCPv6 traffic", [("udp", "546:547", "546:547")]),
    "DNS": ("Domain Name System traffic (udp and tcp)", [("udp", "53", None), ("tcp", "53", None)]),
    "Distcc": ("Distributed Compiler service", [("tcp", "3632", None)]),
    "FTP": ("File Transfer Protocol", [("tcp", "21", None)]),
    "Finger": ("Finger protocol (RFC 742)", [("tcp", "79", None)]),
    "GNUnet": ("GNUnet secure peer-to-peer networking traffic", [("tcp", "2086", None), ("udp", "2086", None), ("tcp", "1080", None), ("udp", "1080", None)]),
    "GRE": ("Generic Routing Encapsulation tunneling protocol", [("47", None, None)]),
    "Git": ("Git distributed revision control traffic", [("tcp", "9418", None)]),
    "HKP": ("OpenPGP HTTP key server protocol traffic", [("tcp", "11371", None)]),
    "HTTP": ("Hypertext Transfer Protocol (WWW)", [("tcp", "80", None)]),
    "HTTPS": ("Hypertext Transfer Protocol (WWW) over SSL", [("tcp", "443", None)]),
    "ICPV2": ("Internet Cache Protocol V2 (Squid) traffic", [("udp", "3130", None)]),
    "ICQ": ("AOL Instant Messenger traffic", [("tcp", "5190", None)]),
    "IMAP": ("Internet Message Access Protocol", [("tcp", "143", None)]),
    "IMAPS": ("Internet Message Access Protocol over SSL", [("tcp", "993", None)]),
    "IPIP": ("IPIP capsulation traffic", [("94", None, None)]),
    "IPsec": ("IPsec traffic", [("udp", "500", "500"), ("50", None, None)]),
    "IPsecah": ("IPsec authentication (AH) traffic", [("udp", "500", "500"), ("51", None, None)]),
    "IPsecnat": ("IPsec traffic and Nat-Traversal", [("udp", "500", None), ("udp", "4500", None), ("50", None, None)]),
    "IRC": ("Internet Relay Chat traffic", [("tcp", "6667", None)]),
    "Jetdirect": ("HP Jetdirect printing", [("tcp", "9100", None)]),
    "L2TP": ("Layer 2 Tunneling Protocol traffic", [("udp", "1701", None)]),
    "LDAP": ("Lightweight Directory Access Protocol traffic", [("tcp", "389", None)]),
    "LDAPS": ("Secure Lightweight Directory Access Protocol traffic", [("tcp", "636", None)]),
    "MDNS": ("Multicast DNS", [("udp", "5353", None)]),
    "MSNP": ("Microsoft Notification Protocol", [("tcp", "1863", None)]),
    "MSSQL": ("Microsoft SQL Server", [("tcp", "1433", None)]),
    "Mail": ("Mail traffic (SMTP, SMTPS, Submission)", [("tcp", "25", None), ("tcp", "465", None), ("tcp", "587", None)]),
    "Munin": ("Munin networked resource monitoring traffic", [("tcp", "4949", None)]),
    "MySQL": ("MySQL server", [("tcp", "3306", None)]),
    "NNTP": ("NNTP traffic (Usenet)", [("tcp", "119", None)]),
    "NNTPS": ("Encrypted NNTP traffic (Usenet)", [("tcp", "563", None)]),
    "NTP": ("Network Time Protocol (ntpd)", [("udp", "123", None)]),
    "NeighborDiscovery": (
        "IPv6 neighbor solicitation, neighbor and router advertisement",
        [("icmpv6", "router-solicitation", None), ("icmpv6", "router-advertisement", None), ("icmpv6", "neighbor-solicitation", None), ("icmpv6", "neighbor-advertisement", None)],
    ),
    "OSPF": ("OSPF multicast traffic", [("89", None, None)]),
    "OpenVPN": ("OpenVPN traffic", [("udp", "1194", None)]),
    "PCA": ("Symantec PCAnywere (tm)", [("udp", "5632", None), ("tcp", "5631", None)]),
    "PMG": ("Proxmox Mail Gateway web interface", [("tcp", "8006", None)]),
    "POP3": ("POP3 traffic", [("tcp", "110", None)]),
    "POP3S": ("Encrypted POP3 traffic", [("tcp", "995", None)]),
    "PPtP": ("Point-to-Point Tunneling Protocol", [("47", None, None), ("tcp", "1723", None)]),
    "Ping": ("ICMP echo request", [("icmp", "echo-request", None)]),
    "PostgreSQL": ("PostgreSQL server", [("tcp", "5432", None)]),
    "Printer": ("Line Printer protocol printing", [("tcp", "515", None)]),
    "RDP": ("Microsoft Remote Desktop Protocol traffic", [("tcp", "3389", None)]),
    "RIP": ("Routing Information Protocol (bidirectional)", [("udp", "520", None)]),
    "RNDC": ("BIND remote management protocol", [("tcp", "953", None)]),
    "Razor": ("Razor Antispam System", [("tcp", "2703", None)]),
    "Rdate": ("Remote time retrieval (rdate)", [("tcp", "37", None)]),
    "Rsync": ("Rsync server", [("tcp", "873", None)]),
    "SANE": ("SANE network scanning", [("tcp", "6566", None)]),
    "SMB": (
        "Microsoft SMB traffic",
        [("udp", "135,445", None), ("udp", "137:139", None), ("udp", "1024:65535", "137"), ("tcp", "135,139,445", None)],
    ),
    "SMBswat": ("Samba Web Administration Tool", [("tcp", "901", None)]),
    "SMTP": ("Simple Mail Transfer Protocol", [("tcp", "25", None)]),
    "SMTPS": ("Encrypted Simple Mail Transfer Protocol", [("tcp", "465", None)]),
    "SNMP": ("Simple Network Management Protocol", [("udp", "161:162", None), ("tcp", "161", None)]),
    "SPAMD": ("Spam Assassin SPAMD traffic", [("tcp", "783", None)]),
    "SPICEproxy": ("Proxmox VE SPICE display proxy traffic", [("tcp", "3128", None)]),
    "SSH": ("Secure shell traffic", [("tcp", "22", None)]),
    "SVN": ("Subversion server (svnserve)", [("tcp", "3690", None)]),
    "SixXS": ("SixXS IPv6 Deployment and Tunnel Broker", [("tcp", "3874", None), ("udp", "3740", None), ("41", None, None), ("udp", "5072,8374", None)]),
    "Squid": ("Squid web proxy traffic", [("tcp", "3128", None)]),
    "Submission": ("Mail message submission traffic", [("tcp", "587", None)]),
    "Syslog": ("Syslog protocol (RFC 5424) traffic", [("udp", "514", None), ("tcp", "514", None)]),
    "TFTP": ("Trivial File Transfer Protocol traffic", [("udp", "69", None)]),
    "Telnet": ("Telnet traffic", [("tcp", "23", None)]),
    "Telnets": ("Telnet over SSL", [("tcp", "992", None)]),
    "Time": ("RFC 868 Time protocol", [("tcp", "37", None)]),
    "Trcrt": ("Traceroute (for up to 30 hops) traffic", [("udp", "33434:33524", None), ("icmp", "echo-request", None)]),
    "VNC": ("VNC traffic for VNC display's 0 - 99", [("tcp", "5900:5999", None)]),
    "VNCL": ("VNC traffic from Vncservers to Vncviewers in listen mode", [("tcp", "5500", None)]),
    "Web": ("WWW traffic (HTTP and HTTPS)", [("tcp", "80", None), ("tcp", "443", None)]),
    "Webcache": ("Web Cache/Proxy traffic (port 8080)", [("tcp", "8080", None)]),
    "Webmin": ("Webmin traffic", [("tcp", "10000", None)]),
    "Whois": ("Whois (nicname, RFC 3912) traffic", [("tcp", "43", None)]),
}

# Defined only in pve-firewall's IPv6 macro table: they exist in the IPv6 ruleset only.
IPV6_ONLY = frozenset({"DHCPv6", "NeighborDiscovery"})

# Proxmox matches macro names case-insensitively (its GUI offers the preferred spelling).
BY_LOWER: dict[str, str] = {name.lower(): name for name in MACROS}


def lookup(name: str) -> str | None:
    """The canonical macro name, or None if Proxmox has no such macro."""
    return BY_LOWER.get(name.lower())
