"""The auth service's rules, one module per concern: accounts, roles, sessions (refresh
tokens), service clients. Each works inside the session (transaction) it is given, except
`Sessions.refresh`, which commits a reuse's revocation before refusing."""
