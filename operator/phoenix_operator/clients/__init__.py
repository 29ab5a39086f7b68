"""Clients for I/O: the Kubernetes API, Prometheus, Triton and Milvus; the only modules that talk to them."""
