"""The request path's models: the sentence embedder and the intent classifier."""
