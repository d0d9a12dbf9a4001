"""Geohash cells and distances, without I/O: the nearby query is only as right as these. (The
status machine and the onboarding checks are tested through the service, in test_http.py.)"""

from __future__ import annotations

import math
import random

import pytest

from services.driver.geo import (
    ALPHABET,
    cell_ranges,
    covering_cells,
    encode,
    haversine_km,
    successor,
)


@pytest.mark.parametrize(("lat", "lon", "precision", "expected"), [
    (57.64911, 10.40744, 11, "u4pruydqqvj"),  # the reference example of geohash.org
    (-25.382708, -49.265506, 9, "6gkzwgjzn"),
    (90.0, 180.0, 5, "zzzzz"),
    (-90.0, -180.0, 5, "00000"),
])
def test_encode_matches_the_reference_hashes(lat: float, lon: float, precision: int,
                                             expected: str) -> None:
    assert encode(lat, lon, precision) == expected


def test_successor_is_the_first_hash_after_a_prefix() -> None:
    assert successor("u33") == "u34"
    assert successor("u3z") == "u4"
    assert successor("zz") is None
    assert list(ALPHABET) == sorted(ALPHABET)  # why ranges of hashes are ranges of cells


def test_haversine_known_distances() -> None:
    assert haversine_km(0, 0, 0, 1) == pytest.approx(111.195, abs=0.01)
    assert haversine_km(0, 179.99, 0, -179.99) == pytest.approx(2.224, abs=0.01)
    assert haversine_km(89.99, 0, 89.99, 180) == pytest.approx(2.224, abs=0.01)


def _inside(cells: list[str], lat: float, lon: float) -> bool:
    point = encode(lat, lon)
    return any(low <= point and (high is None or point < high)
               for low, high in cell_ranges(cells))


def _point_at(lat: float, lon: float, distance_km: float, bearing: float) -> tuple[float, float]:
    """The point `distance_km` from (lat, lon) on `bearing` (radians), on the sphere."""
    delta = distance_km / 6371.0088
    phi, lam = math.radians(lat), math.radians(lon)
    phi2 = math.asin(math.sin(phi) * math.cos(delta)
                     + math.cos(phi) * math.sin(delta) * math.cos(bearing))
    lam2 = lam + math.atan2(math.sin(bearing) * math.sin(delta) * math.cos(phi),
                            math.cos(delta) - math.sin(phi) * math.sin(phi2))
    lon2 = (math.degrees(lam2) + 540) % 360 - 180
    return math.degrees(phi2), lon2


@pytest.mark.parametrize(("lat", "lon"), [
    (52.52, 13.405),      # a city
    (0.0, 179.999),       # on the antimeridian
    (-0.001, -179.999),   # just across it, south of the equator
    (89.95, 42.0),        # by the north pole
    (-89.999, -120.0),    # by the south pole
    (0.0, 0.0),           # where the four top-level cells meet
])
@pytest.mark.parametrize("radius_km", [0.2, 3.0, 50.0])
def test_the_covering_cells_hold_every_point_within_the_radius(
        lat: float, lon: float, radius_km: float) -> None:
    cells = covering_cells(lat, lon, radius_km)
    assert 1 <= len(cells) <= 32
    assert len({len(c) for c in cells}) == 1
    rng = random.Random(f"{lat},{lon},{radius_km}")
    for _ in range(400):
        distance = radius_km * math.sqrt(rng.random()) * 0.999
        plat, plon = _point_at(lat, lon, distance, rng.uniform(0, 2 * math.pi))
        assert haversine_km(lat, lon, plat, plon) <= radius_km
        assert _inside(cells, plat, plon), (plat, plon, distance)


def test_a_small_radius_reads_a_few_fine_cells_not_the_world() -> None:
    cells = covering_cells(52.52, 13.405, 1.0)
    assert len(cells[0]) >= 5  # cells of at most ~5 km
    assert not _inside(cells, 52.62, 13.405)  # 11 km north is not a candidate
