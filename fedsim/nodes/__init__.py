"""SimPy processes: the server, clients, key agent and the router that connects them."""
