"""The peer wire protocol: framing, handshakes, one connection's life, extensions, the ports peers see."""
