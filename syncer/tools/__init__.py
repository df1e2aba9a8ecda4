"""Adapters to the outside, one per external thing: a registry's HTTP API, skopeo, Trivy, git, endpoints and their credentials. The rest of syncer sees typed results and typed errors."""
