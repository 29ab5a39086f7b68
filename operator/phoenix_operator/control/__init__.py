"""Control loop: observe (Prometheus), decide (pure policy), act (through the clients)."""
