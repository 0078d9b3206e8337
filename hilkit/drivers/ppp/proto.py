"""PPP protocol field values (RFC 1661 §2; assignments from RFC 1332, 1334, 1144, 1962,
1989, 1994, 5072).

Ranges (RFC 1661 §2): 0x0xxx-0x3xxx network layer, 0x8xxx-0xBxxx the matching
Network Control Protocols (network protocol | 0x8000), 0xCxxx link-layer
control. Every value has an even first octet and an odd last one, which is
what lets a receiver tell a compressed one-octet field from a full one.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "NAMES",
    "PPP_CCP",
    "PPP_CHAP",
    "PPP_IP",
    "PPP_IPCP",
    "PPP_IPV6",
    "PPP_IPV6CP",
    "PPP_LCP",
    "PPP_LQR",
    "PPP_PAP",
    "PPP_VJC",
    "PPP_VJUC",
]

# Network layer
PPP_IP: Final = 0x0021  # Internet Protocol version 4 (RFC 1332 §2)
PPP_VJC: Final = 0x002D  # Van Jacobson compressed TCP/IP (RFC 1144, RFC 1332 §4)
PPP_VJUC: Final = 0x002F  # Van Jacobson uncompressed TCP/IP (RFC 1144, RFC 1332 §4)
PPP_IPV6: Final = 0x0057  # Internet Protocol version 6 (RFC 5072 §3)
# Network Control Protocols
PPP_IPCP: Final = 0x8021  # IP Control Protocol (RFC 1332 §2)
PPP_IPV6CP: Final = 0x8057  # IPv6 Control Protocol (RFC 5072 §4)
PPP_CCP: Final = 0x80FD  # Compression Control Protocol (RFC 1962 §2)
# Link layer control
PPP_LCP: Final = 0xC021  # Link Control Protocol (RFC 1661 §5)
PPP_PAP: Final = 0xC023  # Password Authentication Protocol (RFC 1334 §2.2)
PPP_LQR: Final = 0xC025  # Link Quality Report (RFC 1989 §2)
PPP_CHAP: Final = 0xC223  # Challenge Handshake Authentication Protocol (RFC 1994 §4)

NAMES: Final[dict[int, str]] = {
    PPP_IP: "IPv4",
    PPP_VJC: "VJ-compressed",
    PPP_VJUC: "VJ-uncompressed",
    PPP_IPV6: "IPv6",
    PPP_IPCP: "IPCP",
    PPP_IPV6CP: "IPV6CP",
    PPP_CCP: "CCP",
    PPP_LCP: "LCP",
    PPP_PAP: "PAP",
    PPP_LQR: "LQR",
    PPP_CHAP: "CHAP",
}
"""Short names for logs and captures."""
