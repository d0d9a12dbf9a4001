"""What the gateway decides at the edge, before a request reaches a service: the token and
the route's permissions (`auth`), the rate limits (`rate_limit`)."""
