"""BaseRouter and the user service against bare FastAPI apps (`python -m bench.crud`)."""
