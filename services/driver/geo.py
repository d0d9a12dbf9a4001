"""Geohash cells and great-circle distances: how the nearby query finds its few candidates.

A geohash interleaves longitude and latitude bits (longitude first) and writes them five at a
time in the alphabet below, which sorts like the cells it names: every point of a cell has a
hash starting with the cell's hash, so "all points in cell `g`" is the range `g <= hash <
successor(g)`, an index range scan on any database (no spatial extension needed).

`covering_cells` gives the cells of one precision that cover a circle's bounding box, the
finest precision that needs at most `max_cells` of them; the query reads those ranges, then
keeps the candidates whose exact (haversine) distance is within the radius. Near the poles the
box spans every longitude, and across the antimeridian it is split in two; both only cost a
coarser precision, never a missed driver.
"""

from __future__ import annotations

import math

ALPHABET = "0123456789bcdefghjkmnpqrstuvwxyz"
"""Base32 of geohash; in ASCII (and any collation) order, so prefixes sort as ranges."""
PRECISION = 9
"""Characters stored per location: a cell of about 5 m x 5 m."""
EARTH_RADIUS_KM = 6371.0088
"""The mean Earth radius (IUGG)."""
KM_PER_DEGREE = EARTH_RADIUS_KM * math.pi / 180
MARGIN = 1.001
"""The box is made this much larger than the circle, so rounding never leaves a point out."""


def _bits(precision: int) -> tuple[int, int]:
    """Latitude and longitude bits of a hash of `precision` characters."""
    total = 5 * precision
    return total // 2, (total + 1) // 2


def _index(value: float, low: float, span: float, bits: int) -> int:
    """Which of the 2**bits equal slices of [low, low + span] holds `value` (the top edge
    belongs to the last slice)."""
    slices = 1 << bits
    return min(slices - 1, max(0, int((value - low) / span * slices)))


def _hash(lat_index: int, lon_index: int, precision: int) -> str:
    lat_bits, lon_bits = _bits(precision)
    value = 0
    for n in range(5 * precision):
        if n % 2 == 0:  # even positions are longitude bits, most significant first
            lon_bits -= 1
            bit = (lon_index >> lon_bits) & 1
        else:
            lat_bits -= 1
            bit = (lat_index >> lat_bits) & 1
        value = (value << 1) | bit
    return "".join(ALPHABET[(value >> shift) & 31]
                   for shift in range(5 * (precision - 1), -1, -5))


def encode(lat: float, lon: float, precision: int = PRECISION) -> str:
    """The geohash of a point."""
    lat_bits, lon_bits = _bits(precision)
    return _hash(_index(lat, -90.0, 180.0, lat_bits), _index(lon, -180.0, 360.0, lon_bits),
                 precision)


def successor(prefix: str) -> str | None:
    """The first hash after every hash starting with `prefix`; None when there is none
    ("zzz" is the last cell)."""
    stripped = prefix.rstrip(ALPHABET[-1])
    if not stripped:
        return None
    return stripped[:-1] + ALPHABET[ALPHABET.index(stripped[-1]) + 1]


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """The great-circle distance between two points, in kilometres."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi, dlambda = phi2 - phi1, math.radians(lon2 - lon1)
    a = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlambda / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def bounding_box(lat: float, lon: float, radius_km: float
                 ) -> tuple[tuple[float, float], list[tuple[float, float]]]:
    """The latitude range and the longitude ranges (two across the antimeridian, the whole
    circle of longitudes when the box reaches a pole) holding every point within `radius_km`."""
    dlat = radius_km * MARGIN / KM_PER_DEGREE
    lat_lo, lat_hi = lat - dlat, lat + dlat
    if lat_lo <= -90.0 or lat_hi >= 90.0:
        return (max(-90.0, lat_lo), min(90.0, lat_hi)), [(-180.0, 180.0)]
    widest = math.cos(math.radians(max(abs(lat_lo), abs(lat_hi))))
    dlon = radius_km * MARGIN / (KM_PER_DEGREE * widest)
    if dlon >= 180.0:
        return (lat_lo, lat_hi), [(-180.0, 180.0)]
    lon_lo, lon_hi = lon - dlon, lon + dlon
    if lon_lo < -180.0:
        return (lat_lo, lat_hi), [(lon_lo + 360.0, 180.0), (-180.0, lon_hi)]
    if lon_hi > 180.0:
        return (lat_lo, lat_hi), [(lon_lo, 180.0), (-180.0, lon_hi - 360.0)]
    return (lat_lo, lat_hi), [(lon_lo, lon_hi)]


def covering_cells(lat: float, lon: float, radius_km: float, *, max_cells: int = 32,
                   max_precision: int = PRECISION) -> list[str]:
    """Sorted geohash cells, all of one precision, covering every point within `radius_km`
    of (lat, lon): the finest precision needing at most `max_cells` cells (precision 1 has 32
    cells in all, so it always fits)."""
    (lat_lo, lat_hi), lon_ranges = bounding_box(lat, lon, radius_km)
    chosen = 1
    for precision in range(1, max_precision + 1):
        if _count(precision, lat_lo, lat_hi, lon_ranges) > max_cells:
            break
        chosen = precision
    return sorted(_cells(chosen, lat_lo, lat_hi, lon_ranges))


def _spans(precision: int, lat_lo: float, lat_hi: float,
           lon_ranges: list[tuple[float, float]]) -> tuple[range, list[range]]:
    lat_bits, lon_bits = _bits(precision)
    rows = range(_index(lat_lo, -90.0, 180.0, lat_bits),
                 _index(lat_hi, -90.0, 180.0, lat_bits) + 1)
    columns = [range(_index(lo, -180.0, 360.0, lon_bits), _index(hi, -180.0, 360.0, lon_bits) + 1)
               for lo, hi in lon_ranges]
    return rows, columns


def _count(precision: int, lat_lo: float, lat_hi: float,
           lon_ranges: list[tuple[float, float]]) -> int:
    rows, columns = _spans(precision, lat_lo, lat_hi, lon_ranges)
    return len(rows) * sum(len(c) for c in columns)


def _cells(precision: int, lat_lo: float, lat_hi: float,
           lon_ranges: list[tuple[float, float]]) -> set[str]:
    rows, columns = _spans(precision, lat_lo, lat_hi, lon_ranges)
    return {_hash(i, j, precision) for i in rows for span in columns for j in span}


def cell_ranges(cells: list[str]) -> list[tuple[str, str | None]]:
    """`[low, high)` hash ranges covering sorted `cells`, neighbours in hash order merged
    (high None: no upper bound)."""
    ranges: list[tuple[str, str | None]] = []
    for cell in cells:
        end = successor(cell)
        if ranges and ranges[-1][1] == cell:
            ranges[-1] = (ranges[-1][0], end)
        else:
            ranges.append((cell, end))
    return ranges
