"""`python -m bench.gateway.profiled OUT`: `python -m gateway` with cProfile switched on by
SIGUSR1 and off by SIGUSR2, which writes the profile to OUT: only the measured window is
profiled (not the start-up's imports, nor the warm-up's requests), in CPU time."""

from __future__ import annotations

import cProfile
import os
import signal
import sys
import time


def main() -> None:
    out = sys.argv[1]
    # CPU time, not wall time: on a shared machine, wall time charges another process's turn
    # on the core to whichever function was running when the gateway was preempted.
    profiler = cProfile.Profile(time.thread_time_ns, 1e-9)

    def start(signum: int, frame: object) -> None:
        profiler.enable()

    def stop(signum: int, frame: object) -> None:
        profiler.disable()
        profiler.dump_stats(f"{out}.part")
        os.replace(f"{out}.part", out)  # whole, or not there

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    from gateway.__main__ import main as gateway

    gateway()


if __name__ == "__main__":
    main()
