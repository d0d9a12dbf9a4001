"""`python -m services.auth`: serve the auth service (host and port from the settings)."""

from core.serving import serve
from services.auth.config import AuthSettings

if __name__ == "__main__":
    serve("services.auth.main:create_app", AuthSettings())
