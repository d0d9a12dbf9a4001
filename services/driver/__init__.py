"""The driver service: drivers (licence, vehicle, status), their latest locations, the nearby
query and a live location stream. Port 8003; publishes `driver.events` and `driver.locations`."""
