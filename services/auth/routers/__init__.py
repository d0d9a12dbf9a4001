"""The auth service's HTTP routes (paths per services/README.md)."""

from services.auth.routers.accounts import router as accounts
from services.auth.routers.keys import router as keys
from services.auth.routers.oauth import router as oauth
from services.auth.routers.rbac import router as rbac

ROUTERS = (accounts, rbac, oauth, keys)

__all__ = ["ROUTERS"]
