"""`python -m services.notification`: serve the app (host and port from the settings)."""

from core.serving import serve

if __name__ == "__main__":
    serve("services.notification.main:create_app")
