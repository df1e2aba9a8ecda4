"""Who may do what, enforced elsewhere: the token service that applies catalog/access/ to the
trusted registry, CODEOWNERS for the catalog, and the policies exported for nodes."""
