"""Frame formats: Ethernet, IPv4, TCP (+options), checksums, sequence numbers.

Formats know nothing of connection state, I/O or clocks.
"""
