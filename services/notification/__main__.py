"""`python -m services.notification`: serve the app on SERVICE_HOST:SERVICE_PORT (8004 unless
the environment says otherwise)."""

from core.serving import serve
from services.notification.config import NotificationSettings

if __name__ == "__main__":
    serve("services.notification.main:create_app", NotificationSettings())
