"""Vector stores behind one async interface: the local store (SQL registry) and Pinecone."""

from .base import Metric, QueryMatch, VectorRecord, VectorStore
from .local import LocalVectorStore
from .pinecone import PartialUpsertError, PineconeVectorStore

__all__ = [
    "LocalVectorStore",
    "Metric",
    "PartialUpsertError",
    "PineconeVectorStore",
    "QueryMatch",
    "VectorRecord",
    "VectorStore",
]
