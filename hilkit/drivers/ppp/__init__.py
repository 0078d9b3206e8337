"""PPP over a serial line (RFC 1661/1662): sans-I/O protocol modules, the device on top."""
