"""The Kopf runtime: handlers, daemons and the operator's own /metrics, wiring reconcile and control."""
