"""Control loops: observe (Prometheus), decide (pure policies), act (Kubernetes + Triton)."""
