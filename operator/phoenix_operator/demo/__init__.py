"""``phoenix demo``: the operator in closed loop with a digital twin of a Triton fleet (docs/demo.md)."""
