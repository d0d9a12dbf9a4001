"""The Apache Kafka broker distribution: jars resolved from Maven Central, cached once.

No release tarball is needed: infra/kafka/pom.xml names the official `kafka_2.13` artifact plus a
log4j2 binding, and Maven copies the runtime classpath into the cache. A file lock makes
concurrent first runs (parallel test sessions, `make up` + tests) resolve only once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shlex
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from devinfra.files import file_lock
from devinfra.process import DevInfraError, run_checked

log = logging.getLogger("devinfra")

DEFAULT_KAFKA_VERSION = "4.4.0"  # keep in step with <kafka.version> in infra/kafka/pom.xml
INFRA_DIR = Path(__file__).resolve().parent.parent / "infra" / "kafka"
POM = INFRA_DIR / "pom.xml"
LOG4J2_CONFIG = INFRA_DIR / "log4j2.properties"
_MARKER = "libs.complete"

# Small heap, serial GC and the C1 compiler only: fastest startup on 2 cores, plenty for tests.
# Append to or override these with $KFM_KAFKA_JAVA_OPTS (later flags win), e.g. a benchmark
# may want "-XX:TieredStopAtLevel=4 -Xmx2g".
JAVA_OPTS = (
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
    "-Dlog4j2.shutdownHookEnabled=false",
    "-Xlog:cds=off,cds+dynamic=off",
)
BROKER_HEAP = ("-Xms64m", "-Xmx512m")
TOOL_HEAP = ("-Xmx256m",)


def kafka_version() -> str:
    """The Kafka version to run: $KFM_KAFKA_VERSION or the pinned default."""
    return os.environ.get("KFM_KAFKA_VERSION") or DEFAULT_KAFKA_VERSION


def cache_root() -> Path:
    """$KFM_CACHE_DIR or ~/.cache/kfm: survives between sessions, shared by all checkouts."""
    configured = os.environ.get("KFM_CACHE_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "kfm"


def kafka_home(version: str | None = None) -> Path:
    return cache_root() / f"kafka-{version or kafka_version()}"


def java_executable() -> str:
    """The `java` to run the broker with: $JAVA_HOME/bin/java, else the one on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise DevInfraError(
            "java not found: Kafka 4.x needs Java 17+ "
            "(run scripts/bootstrap.sh, or apt-get install openjdk-17-jre-headless)"
        )
    return found


def ensure_kafka(version: str | None = None) -> Path:
    """Resolve the broker's jars into the cache (first call only) and return the libs dir."""
    version = version or kafka_version()
    home = kafka_home(version)
    libs = home / "libs"
    if _complete(home, libs):
        return libs
    with file_lock(home / ".lock"):
        if _complete(home, libs):  # another process resolved it while we waited
            return libs
        _resolve(version, home, libs)
    return libs


def _complete(home: Path, libs: Path) -> bool:
    return (home / _MARKER).is_file() and any(libs.glob("kafka_2.13-*.jar"))


def _resolve(version: str, home: Path, libs: Path) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise DevInfraError(
            "mvn not found: Maven resolves the Kafka jars "
            "(run scripts/bootstrap.sh, or apt-get install maven)"
        )
    if not POM.is_file():
        raise DevInfraError(f"{POM} is missing: devinfra must run from the project checkout")
    log.info(
        "Resolving Apache Kafka %s from Maven Central into %s (first run only; ~1 min)",
        version,
        libs,
    )
    started = time.monotonic()
    staging = home / f"libs.tmp-{uuid.uuid4().hex}"
    try:
        run_checked(
            [
                mvn,
                "-q",
                "-B",
                "-Dstyle.color=never",
                "-f",
                str(POM),
                f"-Dkafka.version={version}",
                "dependency:copy-dependencies",
                f"-DoutputDirectory={staging}",
                "-DincludeScope=runtime",
            ],
            what=f"resolving Apache Kafka {version} with Maven",
            timeout=900.0,
        )
        jars = sorted(p.name for p in staging.glob("*.jar"))
        if not any(name.startswith(f"kafka_2.13-{version}") for name in jars):
            raise DevInfraError(f"Maven finished but no kafka_2.13-{version} jar in {staging}")
        if libs.exists():
            shutil.rmtree(libs)
        staging.rename(libs)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    (home / _MARKER).write_text("\n".join(jars) + "\n")
    log.info("Kafka %s ready: %d jars in %.1fs", version, len(jars), time.monotonic() - started)


def cds_archive(libs: Path) -> Path | None:
    """Where this JVM + jar set keeps its class-data-sharing archive, or None if disabled.

    A dynamic CDS archive roughly halves broker startup (about 2.5s -> 1.3s on 2 cores). It is
    only valid for the exact JVM and jars, so both are part of its name; a stale or broken
    archive is ignored by the JVM (-Xshare:auto). Set KFM_KAFKA_CDS=0 to turn it off.
    """
    if os.environ.get("KFM_KAFKA_CDS", "1") == "0":
        return None
    java = Path(java_executable()).resolve()
    marker = libs.parent / _MARKER
    stamp = f"{java}:{java.stat().st_mtime_ns}:{marker.stat().st_mtime_ns}"
    key = hashlib.sha256(stamp.encode()).hexdigest()[:16]
    return libs.parent / "cds" / f"broker-{key}.jsa"


@dataclass(frozen=True)
class JavaCommand:
    argv: list[str]  # java and its options, up to (not including) the main class
    cds_dump: Path | None  # where this JVM writes a new CDS archive at exit, if it does


def java_command(
    libs: Path, logs_dir: Path, heap: Sequence[str], *, record_cds: bool = False
) -> JavaCommand:
    """The command line that runs a Kafka main class as bin/kafka-run-class.sh would.

    Uses the CDS archive when there is one; with `record_cds`, a JVM started while there is
    none records it at exit (publish it with `publish_cds_dump` once the JVM exited cleanly).
    """
    opts = [*heap, *JAVA_OPTS]
    dump: Path | None = None
    archive = cds_archive(libs)
    if archive is not None and archive.is_file():
        opts.append(f"-XX:SharedArchiveFile={archive}")
    elif archive is not None and record_cds:
        archive.parent.mkdir(parents=True, exist_ok=True)
        dump = archive.with_name(f"{archive.stem}.{uuid.uuid4().hex}.tmp")
        opts.append(f"-XX:ArchiveClassesAtExit={dump}")
    opts += shlex.split(os.environ.get("KFM_KAFKA_JAVA_OPTS", ""))
    argv = [
        java_executable(),
        *opts,
        f"-Dlog4j2.configurationFile={LOG4J2_CONFIG}",
        f"-Dkafka.logs.dir={logs_dir}",
        "-cp",
        f"{libs}/*",
    ]
    return JavaCommand(argv, dump)


def publish_cds_dump(libs: Path, dump: Path | None, *, clean: bool) -> None:
    """Make a cleanly exited JVM's archive the shared one; drop a possibly half-written one."""
    if dump is None:
        return
    archive = cds_archive(libs)
    if clean and archive is not None and dump.is_file() and dump.stat().st_size > 0:
        dump.replace(archive)
    else:
        dump.unlink(missing_ok=True)
