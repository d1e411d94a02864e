"""Running the gateway: the server, the supervisor of N processes, the embedded Redis."""
