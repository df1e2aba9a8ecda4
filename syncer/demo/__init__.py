"""Local stand-ins for the outside world, used by ``syncer demo`` and by the tests.

- ``registry``: a real CNCF distribution registry as a native process (plain, basic auth, TLS);
- ``images``: OCI images built in Python from files, pushed with skopeo;
- ``trivydb``: Trivy's on-disk vulnerability database (bbolt + metadata.json) written in
  Python, so that Trivy scans offline.

Nothing here is used by the pipeline itself.
"""
