"""The auth service: accounts, passwords, access and refresh tokens, RBAC, service clients.

It is the platform's only token issuer: every other service verifies its tokens through
`/.well-known/jwks.json` (see services/README.md for the contract).
"""
