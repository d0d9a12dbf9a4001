"""`python -m services.driver`: serve the driver service (SERVICE_HOST, SERVICE_PORT)."""

from core.serving import serve
from services.driver.config import DriverSettings

if __name__ == "__main__":
    serve("services.driver.main:create_app", DriverSettings())
