"""Pure status: conditions and quality figures computed from what was observed, written by the runtime."""
