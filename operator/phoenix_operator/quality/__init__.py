"""The quality loop: knowledge-base ingestion into versioned collections, and offline evaluation.

``phoenix kb`` builds each knowledge-base refresh into a new collection and moves the alias the
gateway searches only once that collection is complete, so a refresh can be rolled back and a
search never sees a half-built index. ``phoenix eval`` measures the intent classifier (and, with
Milvus, retrieval) on a labelled set and reports figures the operator can read from a Job.
"""
