"""The chat gateway: OpenAI-compatible endpoint, urgency flagging, retrieval, streaming to Triton."""
