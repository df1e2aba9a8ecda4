"""syncer: a GitOps content pipeline from Docker Hub to a trusted registry."""

__version__ = "0.1.0"
