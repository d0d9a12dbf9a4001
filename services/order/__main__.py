"""`python -m services.order`: serve the order service (SERVICE_HOST, SERVICE_PORT)."""

from core.serving import serve
from services.order.config import OrderSettings

if __name__ == "__main__":
    serve("services.order.main:create_app", OrderSettings())
