"""The ride projections declared at import, as a service's `projections` module declares
its own, over the topic named by RIDES_TOPIC: for `python -m core projections ...
--projections tests.integration.procs.ride_projections`."""

from __future__ import annotations

import os

from tests.helpers.projections import ride_projections

ride_history, driver_trips = ride_projections(os.environ["RIDES_TOPIC"])
