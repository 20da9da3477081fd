"""Sans-I/O TCP: segments and the time in, segments out. No clocks, no sockets."""
