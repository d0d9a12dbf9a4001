"""`python -m services.user`: serve the user service (SERVICE_HOST, SERVICE_PORT)."""

from core.serving import serve
from services.user.config import UserSettings

if __name__ == "__main__":
    serve("services.user.main:create_app", UserSettings())
