"""tasks.ingest"""
